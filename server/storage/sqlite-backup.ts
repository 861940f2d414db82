/**
 * Backups of the SQLite events DB, and restoring one safely. A restored DB has lost whatever
 * happened after the backup: clients may hold channel offsets and document versions from that
 * lost future. Restoring therefore gives every channel a new epoch and documents a new epoch, so
 * those clients get a `reset` (channels) or the full state (documents) instead of a silent gap;
 * their unacknowledged writes are still applied once (their sequences move up in the handshake).
 */
import { copyFileSync, existsSync, renameSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { RESTORE_SQL, openSqliteStore } from './sqlite.js';

/** Copies the live DB to `target` (consistent while the server runs: SQLite's online backup). */
export async function backupSqlite(source: string, target: string): Promise<void> {
  if (!existsSync(source)) throw new Error(`no events DB at ${source}`);
  const db = new Database(source, { readonly: true, fileMustExist: true });
  try {
    await db.backup(target);
  } finally {
    db.close();
  }
}

/**
 * Replaces the DB at `target` with the backup `source`, then gives it new epochs. The server
 * must be stopped. The DB is migrated first (a backup from an older server), so the epochs exist.
 */
export function restoreSqlite(source: string, target: string): void {
  if (!existsSync(source)) throw new Error(`no backup at ${source}`);
  const staging = `${target}.restoring`;
  rmSync(staging, { force: true });
  copyFileSync(source, staging);
  // Opening runs the migrations; then the restore is marked in the same file.
  const store = openSqliteStore({ path: staging, retention: { maxEvents: Number.MAX_SAFE_INTEGER, maxAgeMs: Number.MAX_SAFE_INTEGER } });
  void store.close();
  const db = new Database(staging);
  try {
    db.transaction(() => {
      db.exec(RESTORE_SQL);
      db.prepare('INSERT INTO restores (restored_at, source) VALUES (?, ?)').run(Date.now(), source);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
  for (const suffix of ['-wal', '-shm']) rmSync(`${target}${suffix}`, { force: true });
  rmSync(`${staging}-wal`, { force: true });
  rmSync(`${staging}-shm`, { force: true });
  renameSync(staging, target);
}
