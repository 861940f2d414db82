#!/usr/bin/env node
/**
 * `tether-restore <backup file>` (in this repository: `npm run restore -- <backup file>`): replaces the events DB at TETHER_DB with a backup and
 * gives it new channel and document epochs. Stop the server first.
 */
import { loadConfig } from '../config.js';
import { restoreSqlite } from '../storage/sqlite-backup.js';

const source = process.argv[2];
if (!source) {
  console.error('usage: tether-restore <backup file>   (stop the server first; in the repository: npm run restore -- <backup file>)');
  process.exit(2);
}
const { db } = loadConfig();
try {
  restoreSqlite(source, db);
  console.log(`tether: restored ${db} from ${source}; channels and documents have new epochs, clients resynchronise on reconnect`);
} catch (err) {
  console.error(`tether: restore failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
