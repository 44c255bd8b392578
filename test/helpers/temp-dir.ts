import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** The folders this test file made (each file has its own module registry). */
const made = new Set<string>();

/**
 * A fresh folder under the system's temp folder, mode 755 rather than mkdtemp's 700: as root,
 * the embedded PostgreSQL and PgBouncer run as another OS user, which must be able to enter it.
 */
export function makeTempDir(label: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `tb-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** makeTempDir, removed when the test file ends (test/helpers/cleanup-hooks.ts). */
export function tempDir(label: string): string {
  const dir = makeTempDir(label);
  made.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
  made.clear();
}
