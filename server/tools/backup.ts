#!/usr/bin/env node
/**
 * `tether-backup <file>` (in this repository: `npm run backup -- <file>`): an online backup of the events DB at TETHER_DB (the server may
 * keep running).
 */
import { loadConfig } from '../config.js';
import { backupSqlite } from '../storage/sqlite-backup.js';

const target = process.argv[2];
if (!target) {
  console.error('usage: tether-backup <backup file>   (in the repository: npm run backup -- <backup file>)');
  process.exit(2);
}
const { db } = loadConfig();
backupSqlite(db, target).then(
  () => console.log(`tether: backed up ${db} to ${target}`),
  (err: unknown) => {
    console.error(`tether: backup failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
