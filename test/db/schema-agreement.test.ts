import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrismaPg } from '@prisma/adapter-pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prisma, PrismaClient } from '../../src/generated/prisma/client.js';
import { createTestDatabase, type TestDatabase, withClient } from '../helpers/database.js';

/*
 * Proves prisma/schema.prisma and the database the migrations build agree, so a
 * schema edit without a migration (or the reverse) fails here rather than in
 * production. The datamodel comes from Prisma's own parser: the `prisma` package
 * ships it as prisma_schema_build_bg.wasm (the same code as @prisma/prisma-schema-wasm,
 * whose get_dmmf is what `prisma generate` feeds generators), with its JS glue bundled
 * into build/cli.js where it cannot be imported. The few lines of glue below call its
 * `get_dmmf` directly; no native engine is involved.
 */

const SCHEMA_PATH = fileURLToPath(new URL('../../prisma/schema.prisma', import.meta.url));
const GENERATED_CLASS = fileURLToPath(new URL('../../src/generated/prisma/internal/class.ts', import.meta.url));

/** The indexes the migrations add that schema.prisma cannot state (partial; see the migration SQL). */
const EXTRA_INDEXES: ExpectedIndex[] = [
  { table: 'tunnels', name: 'tunnels_live_slug_key', unique: true, primary: false, columns: ['slug'], predicate: "(status <> 'ended'::tunnel_status)" },
  { table: 'tunnels', name: 'tunnels_live_account_idx', unique: false, primary: false, columns: ['cf_account_id'], predicate: "(status <> 'ended'::tunnel_status)" },
];

// --- the datamodel, from Prisma's schema parser (wasm) ---------------------------

interface DmmfField {
  name: string;
  dbName?: string | null;
  kind: 'scalar' | 'enum' | 'object' | 'unsupported';
  type: string;
  isList: boolean;
  isRequired: boolean;
  isUpdatedAt: boolean;
  hasDefaultValue: boolean;
  default?: unknown;
  nativeType?: [string, string[]] | null;
  // Relation fields (kind 'object') only.
  relationFromFields?: string[];
  relationToFields?: string[];
  relationOnDelete?: string;
  relationOnUpdate?: string;
}
interface DmmfModel { name: string; dbName: string | null; schema: string | null; fields: DmmfField[] }
interface DmmfEnum { name: string; dbName?: string | null; values: Array<{ name: string; dbName: string | null }> }
interface DmmfIndex {
  model: string;
  type: 'id' | 'normal' | 'unique' | 'fulltext';
  dbName?: string | null;
  fields: Array<{ name: string; sortOrder?: 'asc' | 'desc' }>;
  where?: unknown;
}
interface Datamodel { models: DmmfModel[]; enums: DmmfEnum[]; indexes: DmmfIndex[]; types: unknown[] }

/**
 * Minimal wasm-bindgen glue for prisma_schema_build_bg.wasm, mirroring what
 * prisma's build/cli.js does (strings in via __wbindgen_malloc, `[ptr, len, errRef,
 * isErr]` out). Tied to the installed prisma version: if an upgrade changes the ABI
 * this throws, and the glue in build/cli.js (search "get_dmmf") shows the new shape.
 */
function loadDatamodel(schema: string): Datamodel {
  // tsconfig has no DOM lib, and @types/node only declares WebAssembly's types, so
  // the few members used here are typed locally.
  interface Table { grow(delta: number): number; get(index: number): unknown; set(index: number, value: unknown): void }
  interface WasmApi {
    Module: { new (bytes: Uint8Array): object; imports(module: object): Array<{ module: string; name: string }> };
    Instance: new (module: object, imports: object) => { exports: unknown };
  }
  const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
  const require = createRequire(import.meta.url);
  const wasmPath = path.join(path.dirname(require.resolve('prisma/package.json')), 'build', 'prisma_schema_build_bg.wasm');
  const module = new WebAssembly.Module(readFileSync(wasmPath));
  interface Exports {
    memory: { buffer: ArrayBuffer };
    __wbindgen_malloc(size: number, align: number): number;
    __wbindgen_free(ptr: number, size: number, align: number): void;
    __wbindgen_externrefs: Table;
    __externref_table_dealloc(index: number): void;
    __wbindgen_start(): void;
    get_dmmf(ptr: number, len: number): [number, number, number, number];
  }
  let wasm: Exports | undefined;
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true, fatal: true });
  const text = (ptr: number, len: number) => decoder.decode(new Uint8Array(wasm!.memory.buffer, ptr >>> 0, len));
  let panic = '';
  const imports: Record<string, Record<string, (...args: number[]) => unknown>> = {};
  for (const { module: from, name } of WebAssembly.Module.imports(module)) {
    const table = (imports[from] ??= {});
    if (name.includes('set_message')) table[name] = (p, l) => { panic = text(p!, l!); };
    else if (name.includes('_Error_')) table[name] = (p, l) => new Error(text(p!, l!));
    else if (name.includes('throw')) table[name] = (p, l) => { throw new Error(text(p!, l!)); };
    else if (name.includes('init_externref_table')) {
      table[name] = () => {
        const refs = wasm!.__wbindgen_externrefs;
        const offset = refs.grow(4);
        refs.set(0, undefined);
        refs.set(offset + 0, undefined);
        refs.set(offset + 1, null);
        refs.set(offset + 2, true);
        refs.set(offset + 3, false);
      };
    } else throw new Error(`prisma_schema_build_bg.wasm wants an import this glue does not know: ${from}.${name}`);
  }
  wasm = new WebAssembly.Instance(module, imports).exports as Exports;
  wasm.__wbindgen_start();

  const input = new TextEncoder().encode(JSON.stringify({ prismaSchema: [['schema.prisma', schema]], noColor: true }));
  const inputPtr = wasm.__wbindgen_malloc(input.length, 1) >>> 0;
  new Uint8Array(wasm.memory.buffer).set(input, inputPtr);
  let result: [number, number, number, number];
  try {
    result = wasm.get_dmmf(inputPtr, input.length);
  } catch (error) {
    throw new Error(`get_dmmf panicked: ${panic || String(error)}`);
  }
  const [ptr, len, errorRef, isError] = result;
  if (isError) {
    const error: unknown = wasm.__wbindgen_externrefs.get(errorRef);
    wasm.__externref_table_dealloc(errorRef);
    throw error instanceof Error ? error : new Error(String(error));
  }
  const json = text(ptr, len);
  wasm.__wbindgen_free(ptr, len, 1);
  return (JSON.parse(json) as { datamodel: Datamodel }).datamodel;
}

// --- what the database should contain, derived from the datamodel -----------------

interface ExpectedColumn { name: string; type: string; notNull: boolean; default: string | RegExp | null }
interface ExpectedIndex { table: string; name: string; unique: boolean; primary: boolean; columns: string[]; predicate: string | null; descending?: boolean[] }

const MAX_IDENTIFIER = 63;
const dbNameOf = (x: { name: string; dbName?: string | null }) => x.dbName ?? x.name;

function expectedColumnType(field: DmmfField, datamodel: Datamodel): string {
  if (field.kind === 'enum') {
    const enumDef = datamodel.enums.find((e) => e.name === field.type);
    if (!enumDef) throw new Error(`enum ${field.type} missing from the datamodel`);
    return `${dbNameOf(enumDef)}${field.isList ? '[]' : ''}`;
  }
  if (field.kind !== 'scalar') throw new Error(`field ${field.name}: ${field.kind} fields are not handled by this test yet; extend it`);
  const [native, args = []] = field.nativeType ?? [undefined, []];
  const base = native === undefined ? SCALAR_TYPES[field.type] : NATIVE_TYPES[native]?.(args);
  if (base === undefined) {
    throw new Error(`field ${field.name}: no PostgreSQL type known for ${field.type}${native ? ` @db.${native}(${args.join(',')})` : ''}; extend this test`);
  }
  return `${base}${field.isList ? '[]' : ''}`;
}

// Prisma's PostgreSQL defaults for scalars without @db.*, as format_type() prints them.
const SCALAR_TYPES: Record<string, string> = {
  String: 'text', Int: 'integer', BigInt: 'bigint', Float: 'double precision', Decimal: 'numeric(65,30)',
  Boolean: 'boolean', DateTime: 'timestamp(3) without time zone', Json: 'jsonb', Bytes: 'bytea',
};
const NATIVE_TYPES: Record<string, (args: string[]) => string> = {
  Uuid: () => 'uuid',
  Text: () => 'text',
  VarChar: ([n]) => (n ? `character varying(${n})` : 'character varying'),
  Char: ([n]) => `character(${n ?? 1})`,
  Timestamptz: ([p]) => (p === undefined ? 'timestamp with time zone' : `timestamp(${p}) with time zone`),
  Timestamp: ([p]) => (p === undefined ? 'timestamp without time zone' : `timestamp(${p}) without time zone`),
  Date: () => 'date',
  SmallInt: () => 'smallint', Integer: () => 'integer', BigInt: () => 'bigint',
  DoublePrecision: () => 'double precision', Real: () => 'real',
  Decimal: ([p, s]) => (p ? `numeric(${p},${s ?? 0})` : 'numeric'),
  Boolean: () => 'boolean', JsonB: () => 'jsonb', Json: () => 'json', ByteA: () => 'bytea', Inet: () => 'inet',
};

function expectedDefault(field: DmmfField, datamodel: Datamodel): string | RegExp | null {
  if (!field.hasDefaultValue) return null;
  const value = field.default;
  if (typeof value === 'object' && value !== null && 'name' in value) {
    const fn = value as { name: string; args: unknown[] };
    switch (fn.name) {
      case 'now': return 'CURRENT_TIMESTAMP';
      case 'autoincrement': return /^nextval\('.+'::regclass\)$/;
      // Generated by Prisma Client, not by the database.
      case 'uuid': case 'cuid': case 'nanoid': case 'ulid': return null;
      case 'dbgenerated': return String(fn.args[0]);
      default: throw new Error(`field ${field.name}: default ${fn.name}() is not handled by this test yet; extend it`);
    }
  }
  if (field.kind === 'enum') return `'${String(value)}'::${expectedColumnType(field, datamodel)}`;
  if (typeof value === 'string') return `'${value.replaceAll("'", "''")}'::text`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  // An empty scalar list, as Prisma's migrations write it.
  if (Array.isArray(value) && value.length === 0 && field.isList) return `ARRAY[]::${expectedColumnType(field, datamodel)}`;
  throw new Error(`field ${field.name}: default ${JSON.stringify(value)} is not handled by this test yet; extend it`);
}

// Prisma's default constraint names (psl ConstraintNames): <table>_pkey,
// <table>_<columns>_key, <table>_<columns>_idx. Longer names get truncated by a rule
// this test does not implement, so it refuses them instead of guessing.
function expectedIndexes(datamodel: Datamodel): ExpectedIndex[] {
  return datamodel.indexes.map((index) => {
    const model = datamodel.models.find((m) => m.name === index.model)!;
    const table = dbNameOf(model);
    const columns = index.fields.map((f) => dbNameOf(model.fields.find((mf) => mf.name === f.name)!));
    if (index.type === 'fulltext') throw new Error('fulltext indexes are not handled by this test yet; extend it');
    if (index.where !== undefined && index.where !== null) throw new Error('partial indexes in schema.prisma are not handled by this test yet; extend it');
    const suffix = { id: 'pkey', unique: 'key', normal: 'idx' }[index.type];
    const name = index.dbName ?? (index.type === 'id' ? `${table}_pkey` : `${table}_${columns.join('_')}_${suffix}`);
    if (name.length > MAX_IDENTIFIER) throw new Error(`index name ${name} exceeds ${MAX_IDENTIFIER} characters; teach this test Prisma's truncation`);
    return {
      table,
      name,
      unique: index.type !== 'normal',
      primary: index.type === 'id',
      columns,
      predicate: null,
      descending: index.fields.map((f) => f.sortOrder === 'desc'),
    };
  });
}

interface ExpectedForeignKey { table: string; name: string; columns: string[]; referencedTable: string; referencedColumns: string[]; onDelete: string; onUpdate: string }

// pg_constraint's confdeltype/confupdtype letters for Prisma's referential actions.
const REFERENTIAL_ACTIONS: Record<string, string> = { Cascade: 'c', Restrict: 'r', NoAction: 'a', SetNull: 'n', SetDefault: 'd' };

/**
 * One foreign key per relation field that holds the scalar side (`fields: [...]`), named as
 * Prisma names it (<table>_<columns>_fkey), with Prisma's default actions when the schema
 * states none: onDelete Restrict for a required relation and SetNull for an optional one,
 * onUpdate Cascade.
 */
function expectedForeignKeys(datamodel: Datamodel): ExpectedForeignKey[] {
  return datamodel.models.flatMap((model) =>
    model.fields
      .filter((f) => f.kind === 'object' && (f.relationFromFields?.length ?? 0) > 0)
      .map((field) => {
        const table = dbNameOf(model);
        const target = datamodel.models.find((m) => m.name === field.type)!;
        const columnOf = (m: DmmfModel, name: string) => dbNameOf(m.fields.find((mf) => mf.name === name)!);
        const columns = field.relationFromFields!.map((name) => columnOf(model, name));
        const name = `${table}_${columns.join('_')}_fkey`;
        if (name.length > MAX_IDENTIFIER) throw new Error(`foreign key name ${name} exceeds ${MAX_IDENTIFIER} characters; teach this test Prisma's truncation`);
        const action = (given: string | undefined, fallback: string) => {
          const letter = REFERENTIAL_ACTIONS[given ?? fallback];
          if (letter === undefined) throw new Error(`field ${field.name}: referential action ${given} is not handled by this test yet; extend it`);
          return letter;
        };
        return {
          table,
          name,
          columns,
          referencedTable: dbNameOf(target),
          referencedColumns: field.relationToFields!.map((name) => columnOf(target, name)),
          onDelete: action(field.relationOnDelete, field.isRequired ? 'Restrict' : 'SetNull'),
          onUpdate: action(field.relationOnUpdate, 'Cascade'),
        };
      }),
  );
}

// --- what the database does contain ------------------------------------------------

interface Catalog {
  tables: string[];
  enums: Record<string, string[]>;
  columns: Record<string, ExpectedColumn[]>;
  indexes: ExpectedIndex[];
  constraints: Array<{ table: string; name: string; type: string }>;
  foreignKeys: ExpectedForeignKey[];
}

async function readCatalog(url: string): Promise<Catalog> {
  return withClient(url, async (c) => {
    const tables = (await c.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relname <> '_prisma_migrations'
        ORDER BY 1`,
    )).rows.map((r) => r.name);

    const enums: Record<string, string[]> = {};
    for (const row of (await c.query<{ name: string; labels: string[] }>(
      `SELECT t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
         FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = 'public'::regnamespace GROUP BY 1`,
    )).rows) enums[row.name] = row.labels;

    const columns: Record<string, ExpectedColumn[]> = {};
    for (const row of (await c.query<{ table: string; name: string; type: string; not_null: boolean; default: string | null }>(
      `SELECT c.relname AS table, a.attname AS name,
              CASE WHEN t.typtype = 'e' THEN t.typname::text ELSE format_type(a.atttypid, a.atttypmod) END AS type,
              a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> '_prisma_migrations'
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum`,
    )).rows) (columns[row.table] ??= []).push({ name: row.name, type: row.type, notNull: row.not_null, default: row.default });

    const indexes = (await c.query<{ table: string; name: string; unique: boolean; primary: boolean; columns: string[]; predicate: string | null; descending: boolean[]; method: string; has_expressions: boolean }>(
      `SELECT t.relname AS table, i.relname AS name, ix.indisunique AS unique, ix.indisprimary AS primary,
              array(SELECT a.attname::text FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
              array(SELECT (o & 1) = 1 FROM unnest(ix.indoption::int2[]) WITH ORDINALITY k(o, ord) ORDER BY k.ord) AS descending,
              pg_get_expr(ix.indpred, ix.indrelid) AS predicate, am.amname AS method, ix.indexprs IS NOT NULL AS has_expressions
         FROM pg_index ix
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_am am ON am.oid = i.relam
        WHERE t.relnamespace = 'public'::regnamespace AND t.relname <> '_prisma_migrations'
        ORDER BY 1, 2`,
    )).rows.map(({ method, has_expressions, ...index }) => {
      // Neither is expressible in schema.prisma without saying so there.
      expect(method, `index ${index.name}`).toBe('btree');
      expect(has_expressions, `index ${index.name} has expression columns`).toBe(false);
      return index;
    });

    const constraints = (await c.query<{ table: string; name: string; type: string }>(
      `SELECT t.relname AS table, con.conname AS name, con.contype::text AS type
         FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid
        WHERE t.relnamespace = 'public'::regnamespace AND t.relname <> '_prisma_migrations'
          -- PostgreSQL 18 also lists NOT NULL as constraints (contype n); nullability is compared column by column.
          AND con.contype <> 'n' ORDER BY 1, 2`,
    )).rows;

    const foreignKeys = (await c.query<ExpectedForeignKey>(
      `SELECT t.relname AS table, con.conname AS name,
              array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
              r.relname AS "referencedTable",
              array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord) AS "referencedColumns",
              con.confdeltype::text AS "onDelete", con.confupdtype::text AS "onUpdate"
         FROM pg_constraint con
         JOIN pg_class t ON t.oid = con.conrelid
         JOIN pg_class r ON r.oid = con.confrelid
        WHERE con.contype = 'f' AND t.relnamespace = 'public'::regnamespace ORDER BY 1, 2`,
    )).rows;

    return { tables, enums, columns, indexes, constraints, foreignKeys };
  });
}

// --- the tests ------------------------------------------------------------------------

const sortByName = <T extends { table: string; name: string }>(xs: T[]) =>
  [...xs].sort((a, b) => `${a.table}.${a.name}`.localeCompare(`${b.table}.${b.name}`));

describe('schema.prisma agrees with the migrated database', () => {
  let db: TestDatabase;
  let datamodel: Datamodel;
  let catalog: Catalog;

  beforeAll(async () => {
    datamodel = loadDatamodel(readFileSync(SCHEMA_PATH, 'utf8'));
    db = await createTestDatabase();
    catalog = await readCatalog(db.url);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('parses a non-trivial datamodel (guards the wasm glue against silently returning nothing)', () => {
    expect(datamodel.models.map((m) => m.name)).toEqual(expect.arrayContaining(['Tunnel', 'TunnelEvent']));
    expect(datamodel.enums.length).toBeGreaterThan(0);
    expect(datamodel.indexes.length).toBeGreaterThan(0);
  });

  it('the generated client was generated from this schema.prisma', () => {
    // The round trip below runs the generated client; a stale one would test the
    // wrong schema. Run `npm run generate` if this fails.
    const generated = readFileSync(GENERATED_CLASS, 'utf8').match(/"inlineSchema": ("(?:[^"\\]|\\.)*")/);
    expect(generated, 'inlineSchema not found in the generated client').not.toBeNull();
    expect(JSON.parse(generated![1]!)).toBe(readFileSync(SCHEMA_PATH, 'utf8'));
  });

  it('has one table per model and nothing else', () => {
    expect(datamodel.models.every((m) => m.schema === null)).toBe(true);
    expect(catalog.tables).toEqual(datamodel.models.map(dbNameOf).sort());
  });

  it('has the enums with the same values, in order', () => {
    const expected = Object.fromEntries(datamodel.enums.map((e) => [dbNameOf(e), e.values.map(dbNameOf)]));
    expect(catalog.enums).toEqual(expected);
  });

  it('has every field as a column with its type, nullability and default', () => {
    for (const model of datamodel.models) {
      const table = dbNameOf(model);
      // Relation fields are Prisma Client's view of a foreign key, not columns.
      const expected: ExpectedColumn[] = model.fields.filter((field) => field.kind !== 'object').map((field) => ({
        name: dbNameOf(field),
        type: expectedColumnType(field, datamodel),
        // Prisma makes list columns NOT NULL only when required; same rule.
        notNull: field.isRequired,
        default: expectedDefault(field, datamodel),
      }));
      const actual = catalog.columns[table] ?? [];
      const byName = (xs: ExpectedColumn[]) => [...xs].sort((a, b) => a.name.localeCompare(b.name));
      expect(byName(actual).map((c) => c.name), `columns of ${table}`).toEqual(byName(expected).map((c) => c.name));
      for (const column of expected) {
        const found = actual.find((c) => c.name === column.name)!;
        expect(found, `${table}.${column.name}`).toEqual({
          ...column,
          default: column.default instanceof RegExp ? expect.stringMatching(column.default) : column.default,
        });
      }
    }
  });

  it('has exactly the indexes of @id/@@index/@@unique plus the documented partial unique index', () => {
    const expected = [...expectedIndexes(datamodel), ...EXTRA_INDEXES].map((index) => ({
      ...index,
      descending: index.descending ?? index.columns.map(() => false),
    }));
    expect(sortByName(catalog.indexes)).toEqual(sortByName(expected));
  });

  it('has a foreign key for every relation, with its columns and referential actions', () => {
    const expected = expectedForeignKeys(datamodel);
    // Guards the derivation: the schema has relations, so an empty list means it broke.
    expect(expected.length).toBeGreaterThan(0);
    expect(sortByName(catalog.foreignKeys)).toEqual(sortByName(expected));
  });

  it('has no constraints beyond the primary keys and those foreign keys', () => {
    const expected = [
      ...expectedIndexes(datamodel).filter((i) => i.primary).map((i) => ({ table: i.table, name: i.name, type: 'p' })),
      ...expectedForeignKeys(datamodel).map((fk) => ({ table: fk.table, name: fk.name, type: 'f' })),
    ];
    expect(sortByName(catalog.constraints)).toEqual(sortByName(expected));
  });
});

describe('Prisma Client against the migrated database', () => {
  let db: TestDatabase;
  let prisma: PrismaClient;

  beforeAll(async () => {
    db = await createTestDatabase();
    prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: db.url }) });
  });
  afterAll(async () => {
    await prisma?.$disconnect();
    await db?.drop();
  });

  const newTunnel = (slug: string) => ({
    id: randomUUID(),
    ownerId: 'user-1',
    slug,
    hostname: `${slug}.tunnels.localhost`,
    port: 8080,
  });

  it('creates, finds and updates a tunnel, with the database filling in the defaults', async () => {
    const data = newTunnel('round-trip');
    const created = await prisma.tunnel.create({ data });
    expect(created).toMatchObject({ ...data, status: 'creating', cfTunnelId: null, dnsRecordId: null, endReason: null, endedAt: null });
    expect(created.createdAt).toBeInstanceOf(Date);

    const found = await prisma.tunnel.findUniqueOrThrow({ where: { id: data.id } });
    expect(found).toEqual(created);

    const cfTunnelId = randomUUID();
    const updated = await prisma.tunnel.update({
      where: { id: data.id },
      data: { status: 'active', cfTunnelId, dnsRecordId: 'dns-1' },
    });
    expect(updated).toMatchObject({ status: 'active', cfTunnelId, dnsRecordId: 'dns-1' });
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(created.updatedAt.getTime());

    const byIndex = await prisma.tunnel.findMany({ where: { ownerId: 'user-1', status: 'active' } });
    expect(byIndex.map((t) => t.id)).toEqual([data.id]);
  });

  it('rejects a second live tunnel with the same slug (tunnels_live_slug_key)', async () => {
    await prisma.tunnel.create({ data: newTunnel('taken') });
    const error = await prisma.tunnel.create({ data: newTunnel('taken') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect((error as Prisma.PrismaClientKnownRequestError).code).toBe('P2002');
    // What src/db/database-error.ts's isUniqueViolation(error, constraint) looks for.
    expect(JSON.stringify((error as Prisma.PrismaClientKnownRequestError).meta)).toContain('"tunnels_live_slug_key"');
  });

  it('lets ended tunnels share a slug with each other and with one live tunnel', async () => {
    const first = await prisma.tunnel.create({ data: newTunnel('reused') });
    await prisma.tunnel.update({ where: { id: first.id }, data: { status: 'ended', endReason: 'deleted', endedAt: new Date() } });
    const second = await prisma.tunnel.create({ data: { ...newTunnel('reused'), status: 'ended', endReason: 'heartbeat_lapsed' } });
    const live = await prisma.tunnel.create({ data: newTunnel('reused') });

    const all = await prisma.tunnel.findMany({ where: { slug: 'reused' }, orderBy: { createdAt: 'asc' } });
    expect(all.map((t) => [t.id, t.status])).toEqual([
      [first.id, 'ended'],
      [second.id, 'ended'],
      [live.id, 'creating'],
    ]);
    // Ending is what frees a slug: reviving an ended duplicate must fail.
    await expect(prisma.tunnel.update({ where: { id: second.id }, data: { status: 'active' } })).rejects.toMatchObject({ code: 'P2002' });
  });

  it('keeps a tunnel\'s events in order, refuses events for no tunnel, and drops them with their tunnel', async () => {
    const tunnel = await prisma.tunnel.create({ data: newTunnel('audited') });
    await prisma.tunnelEvent.create({ data: { tunnelId: tunnel.id, type: 'created', actor: 'user:user-1', details: { port: 8080 } } });
    await prisma.tunnelEvent.create({ data: { tunnelId: tunnel.id, type: 'ended', actor: 'reaper', details: { reason: 'heartbeat_lapsed' } } });
    const events = await prisma.tunnelEvent.findMany({ where: { tunnelId: tunnel.id }, orderBy: { id: 'asc' } });
    expect(events.map((e) => [e.type, e.actor, e.details])).toEqual([
      ['created', 'user:user-1', { port: 8080 }],
      ['ended', 'reaper', { reason: 'heartbeat_lapsed' }],
    ]);
    expect(typeof events[0]!.id).toBe('bigint');
    expect(events[0]!.createdAt).toBeInstanceOf(Date);

    await expect(prisma.tunnelEvent.create({ data: { tunnelId: randomUUID(), type: 'created', actor: 'system', details: {} } })).rejects.toMatchObject({ code: 'P2003' });

    await prisma.tunnel.delete({ where: { id: tunnel.id } });
    expect(await prisma.tunnelEvent.count({ where: { tunnelId: tunnel.id } })).toBe(0);
  });
});
