#!/usr/bin/env node
/**
 * `tether-server` (the package's bin) and `npm start`: the reference server configured from the environment.
 */
import { loadConfig, unknownSettings } from './config.js';
import { createLogger } from './log.js';
import { loadProcedures } from './rpc/load-module.js';
import { startServer } from './server.js';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  for (const name of unknownSettings(process.env)) logger.warn({ name }, `${name} is not a Tether setting (a typo?); it is ignored`);
  const procedures = config.proceduresModule === undefined ? {} : await loadProcedures(config.proceduresModule);
  if (config.proceduresModule !== undefined) {
    logger.info({ module: config.proceduresModule, procedures: Object.keys(procedures) }, 'loaded procedures');
  }
  const server = await startServer({ ...config, procedures, logger });
  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    // Whatever holds the shutdown up (a database that does not answer), a stop request stops.
    setTimeout(() => {
      logger.error({ signal }, 'shutdown did not finish in 10 s; exiting now');
      process.exit(1);
    }, 10_000).unref();
    server.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  console.error(`tether: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
