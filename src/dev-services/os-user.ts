import { execFileSync } from 'node:child_process';
import { chownSync } from 'node:fs';

/** PostgreSQL refuses to run as root; as root, the embedded server runs as this system user. */
export const POSTGRES_OS_USER = 'tunnel-broker-pg';

export interface OsIds {
  uid: number;
  gid: number;
}

/**
 * The ids to run the embedded PostgreSQL as: none (the current user) unless this process is
 * root, in which case the system user POSTGRES_OS_USER, created the first time.
 */
export function postgresRunAs(): OsIds | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const existing = lookup(POSTGRES_OS_USER);
  if (existing) return existing;
  try {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', POSTGRES_OS_USER], { stdio: 'pipe' });
  } catch (error) {
    // Another process may have made it first.
    const made = lookup(POSTGRES_OS_USER);
    if (made) return made;
    throw new Error(`running as root, and cannot create the system user ${POSTGRES_OS_USER} for PostgreSQL: ${(error as Error).message.trim()}`, { cause: error });
  }
  const made = lookup(POSTGRES_OS_USER);
  if (!made) throw new Error(`created the system user ${POSTGRES_OS_USER}, but cannot look it up`);
  return made;
}

/** Gives `dir` to `ids` (no-op without ids). */
export function giveTo(dir: string, ids: OsIds | undefined): void {
  if (ids) chownSync(dir, ids.uid, ids.gid);
}

function lookup(name: string): OsIds | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}
