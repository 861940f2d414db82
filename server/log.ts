import { pino, type Logger } from 'pino';

/** JSON logs on stdout. Tokens and keys are redacted wherever they might appear. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: null,
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'apiKey'], censor: '[redacted]' },
  });
}

export type { Logger };
