import { randomBytes, randomUUID } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { ApiFailure, ErrorCode, ok, type ApiReply, type ResultInfo } from './envelope.js';
import { AccessStore } from './access-store.js';
import type { RouteParams } from './routes.js';
import type {
  AccessAudience,
  DeletionRecord,
  EmulatedAccessApp,
  EmulatedAccessPolicy,
  GateLogEntry,
  EmulatedConnection,
  EmulatedDnsRecord,
  EmulatedTunnel,
  EndpointName,
  TunnelConfiguration,
  TunnelStatus,
} from './types.js';

export interface StoreConfig {
  accountId: string;
  zoneId: string;
  zoneName: string;
  maxTunnels: number;
}

interface ConnectorRecord {
  id: string;
  runAt: string;
  conns: EmulatedConnection[];
}

interface TunnelRecord {
  id: string;
  name: string;
  createdAt: string;
  deletedAt: string | null;
  secret: string;
  /** Derived from secret; kept so snapshots of thousands of tunnels stay cheap. */
  token: string;
  configSrc: 'local' | 'cloudflare';
  connectors: Map<string, ConnectorRecord>;
  connsActiveAt: string | null;
  connsInactiveAt: string | null;
  everConnected: boolean;
  configuration: TunnelConfiguration | null;
}

const TUNNEL_PER_PAGE_DEFAULT = 20;
const TUNNEL_PER_PAGE_MAX = 1000;
const DNS_PER_PAGE_DEFAULT = 100;
const DNS_PER_PAGE_MAX = 5_000_000;
const CONNS_PER_CONNECTOR = 4;
const COLOS = ['dfw08', 'ams01', 'lhr01', 'fra08'];
const CLOUDFLARED_VERSION = '2025.8.0';

const DNS_TYPES = new Set([
  'A', 'AAAA', 'CAA', 'CERT', 'CNAME', 'DNSKEY', 'DS', 'HTTPS', 'LOC', 'MX', 'NAPTR', 'NS', 'OPENPGPKEY',
  'PTR', 'SMIMEA', 'SRV', 'SSHFP', 'SVCB', 'TLSA', 'TXT', 'URI',
]);
const PROXIABLE_TYPES = new Set(['A', 'AAAA', 'CNAME']);
/** Filters the real API has but the emulator does not; refusing beats silently returning wrong results. */
const UNSUPPORTED_DNS_FILTERS = ['search', 'tag', 'tag_match', 'shadowed_by_name', 'shadowing_name'];
const HOSTNAME_RE = /^(?=.{1,253}$)([a-z0-9_*]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
const HEX32 = /^[0-9a-f]{32}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export function encodeTunnelToken(accountId: string, tunnelId: string, secret: string): string {
  return Buffer.from(JSON.stringify({ a: accountId, t: tunnelId, s: secret })).toString('base64');
}

function nowIso(): string {
  return new Date().toISOString();
}

function badTunnelRequest(message: string): ApiFailure {
  return new ApiFailure(400, ErrorCode.TUNNEL_INVALID_REQUEST, message);
}

function dnsInvalid(message: string): ApiFailure {
  return new ApiFailure(400, ErrorCode.DNS_VALIDATION, `DNS Validation Error: ${message}`);
}

function asObject(body: unknown, what: string): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiFailure(400, ErrorCode.TUNNEL_INVALID_REQUEST, `${what}: request body must be a JSON object`);
  }
  return body as Record<string, unknown>;
}

function parsePaging(query: URLSearchParams, defaultPerPage: number, maxPerPage: number, onError: (m: string) => ApiFailure) {
  const parse = (name: string, fallback: number): number => {
    const raw = query.get(name);
    if (raw === null || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw onError(`${name} must be a positive integer`);
    return n;
  };
  const page = parse('page', 1);
  const perPage = parse('per_page', defaultPerPage);
  if (perPage > maxPerPage) throw onError(`per_page must be at most ${maxPerPage}`);
  return { page, perPage };
}

function paginate<T>(items: T[], page: number, perPage: number): { slice: T[]; info: ResultInfo } {
  const start = (page - 1) * perPage;
  const slice = items.slice(start, start + perPage);
  return {
    slice,
    info: {
      page,
      per_page: perPage,
      count: slice.length,
      total_count: items.length,
      total_pages: Math.ceil(items.length / perPage),
    },
  };
}

function parseTime(raw: string | null, name: string): number | undefined {
  if (raw === null || raw === '') return undefined;
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw badTunnelRequest(`${name} must be an RFC 3339 timestamp`);
  return t;
}

function parseBool(raw: string | null, name: string, onError: (m: string) => ApiFailure): boolean | undefined {
  if (raw === null || raw === '') return undefined;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw onError(`${name} must be true or false`);
}

/** Requests after which the gate log records which proxied hostnames have no Access application. */
const GATE_CHANGES: ReadonlySet<EndpointName> = new Set<EndpointName>([
  'dns.create', 'dns.edit', 'dns.update', 'dns.delete', 'access.app.create', 'access.app.update', 'access.app.delete',
]);

export class EmulatorStore {
  readonly #tunnels = new Map<string, TunnelRecord>();
  /** Only non-deleted tunnels, so a soft-deleted name is free again. */
  readonly #liveByName = new Map<string, string>();
  readonly #dns = new Map<string, EmulatedDnsRecord>();
  readonly #dnsByName = new Map<string, Set<string>>();
  readonly #deletions: DeletionRecord[] = [];
  readonly #access = new AccessStore();
  readonly #gateLog: GateLogEntry[] = [];

  /** The API token's identifier tag, as token verification reports it. */
  readonly #tokenId = randomBytes(16).toString('hex');
  readonly #createdOn = nowIso();

  constructor(private readonly cfg: StoreConfig) {}

  reset(): void {
    this.#tunnels.clear();
    this.#liveByName.clear();
    this.#dns.clear();
    this.#dnsByName.clear();
    this.#deletions.length = 0;
    this.#access.reset();
    this.#gateLog.length = 0;
  }

  /** `requestIndex` is the request's place in the emulator's log, for the deletion record. */
  handle(endpoint: EndpointName, params: RouteParams, query: URLSearchParams, body: unknown, pathname: string, requestIndex = -1): ApiReply {
    try {
      if (params.accountId !== undefined) this.#checkScope(params.accountId, this.cfg.accountId, pathname);
      if (params.zoneId !== undefined) this.#checkScope(params.zoneId, this.cfg.zoneId, pathname);
      const reply = this.#access.dispatch(endpoint, params, query, body) ?? this.#dispatch(endpoint, params, query, body, requestIndex);
      if (GATE_CHANGES.has(endpoint)) this.#logGates(endpoint, requestIndex);
      return reply;
    } catch (err) {
      if (err instanceof ApiFailure) return err.toReply();
      throw err;
    }
  }

  #checkScope(given: string, expected: string, pathname: string): void {
    if (given === expected) return;
    if (!HEX32.test(given)) {
      throw new ApiFailure(
        400,
        ErrorCode.INVALID_IDENTIFIER,
        `Could not route to ${pathname}, perhaps your object identifier is invalid?`,
      );
    }
    throw new ApiFailure(403, ErrorCode.UNAUTHORIZED_RESOURCE, 'Unauthorized to access requested resource');
  }

  #dispatch(endpoint: EndpointName, p: RouteParams, query: URLSearchParams, body: unknown, requestIndex: number): ApiReply {
    switch (endpoint) {
      case 'tunnel.create':
        return this.#createTunnel(body);
      case 'tunnel.list':
        return this.#listTunnels(query);
      case 'tunnel.get':
        return ok(this.#tunnelJson(this.#tunnel(p.tunnelId!, { allowDeleted: true })));
      case 'tunnel.edit':
        return this.#editTunnel(p.tunnelId!, body);
      case 'tunnel.delete':
        return this.#deleteTunnel(p.tunnelId!, query.get('cascade') === 'true', requestIndex);
      case 'tunnel.configuration.put':
        return this.#putConfiguration(p.tunnelId!, body);
      case 'tunnel.configuration.get':
        return this.#getConfiguration(p.tunnelId!);
      case 'tunnel.connections.list': {
        const t = this.#tunnel(p.tunnelId!);
        return ok([...t.connectors.values()].map((c) => this.#connectorJson(t, c)));
      }
      case 'tunnel.connections.delete':
        this.removeConnections(p.tunnelId!, query.get('client_id') ?? undefined);
        return ok({});
      case 'tunnel.connector.get': {
        const t = this.#tunnel(p.tunnelId!);
        const c = t.connectors.get(p.connectorId!);
        if (!c) throw new ApiFailure(404, ErrorCode.TUNNEL_NOT_FOUND, 'Connector not found');
        return ok(this.#connectorJson(t, c));
      }
      case 'tunnel.token': {
        const t = this.#tunnel(p.tunnelId!);
        return ok(t.token);
      }
      case 'dns.create':
        return ok(this.#writeDns(undefined, body, 'create'));
      case 'dns.list':
        return this.#listDns(query);
      case 'dns.get':
        return ok({ ...this.#dnsRecord(p.recordId!) });
      case 'dns.edit':
        return ok(this.#writeDns(p.recordId!, body, 'patch'));
      case 'dns.update':
        return ok(this.#writeDns(p.recordId!, body, 'put'));
      case 'zone.get':
        return ok({
          id: this.cfg.zoneId,
          name: this.cfg.zoneName,
          status: 'active',
          paused: false,
          type: 'full',
          account: { id: this.cfg.accountId, name: 'Emulated account' },
          name_servers: ['ada.ns.cloudflare.com', 'bob.ns.cloudflare.com'],
          created_on: this.#createdOn,
          modified_on: this.#createdOn,
          activated_on: this.#createdOn,
        });
      case 'user.tokens.verify':
      case 'account.tokens.verify':
        // Reaching here means the bearer token was accepted (and, for the account form, the account is its own).
        return ok({ id: this.#tokenId, status: 'active' });
      case 'dns.delete': {
        const rec = this.#dnsRecord(p.recordId!);
        this.#unindexDns(rec);
        this.#dns.delete(rec.id);
        this.#deletions.push({ resource: 'dns_record', id: rec.id, name: rec.name, content: rec.content, deletedAt: nowIso(), requestIndex });
        return ok({ id: rec.id });
      }
      default:
        // The Access endpoints are answered by AccessStore before this switch.
        throw new ApiFailure(404, ErrorCode.NO_ROUTE, `No route for ${endpoint}`);
    }
  }

  // ---- tunnels -------------------------------------------------------------

  #tunnel(id: string, opts: { allowDeleted?: boolean } = {}): TunnelRecord {
    const t = this.#tunnels.get(id);
    if (!t || (t.deletedAt !== null && !opts.allowDeleted)) {
      throw new ApiFailure(404, ErrorCode.TUNNEL_NOT_FOUND, 'Tunnel not found');
    }
    return t;
  }

  #validSecret(raw: unknown): string {
    if (typeof raw !== 'string' || !BASE64.test(raw) || Buffer.from(raw, 'base64').length < 32) {
      throw badTunnelRequest('tunnel_secret must be base64 of at least 32 bytes');
    }
    return raw;
  }

  #validName(raw: unknown): string {
    if (typeof raw !== 'string' || raw.trim() === '' || raw.length > 255) {
      throw badTunnelRequest('name must be a non-empty string of at most 255 characters');
    }
    return raw;
  }

  #createTunnel(body: unknown): ApiReply {
    const b = asObject(body, 'create tunnel');
    const name = this.#validName(b.name);
    let configSrc: 'local' | 'cloudflare' = 'local';
    if (b.config_src !== undefined) {
      if (b.config_src !== 'local' && b.config_src !== 'cloudflare') {
        throw badTunnelRequest("config_src must be 'local' or 'cloudflare'");
      }
      configSrc = b.config_src;
    }
    const secret = b.tunnel_secret === undefined ? randomBytes(32).toString('base64') : this.#validSecret(b.tunnel_secret);
    if (this.#liveByName.has(name)) {
      throw new ApiFailure(409, ErrorCode.TUNNEL_NAME_CONFLICT, 'Tunnel with name already exists');
    }
    if (this.#liveByName.size >= this.cfg.maxTunnels) {
      throw new ApiFailure(400, ErrorCode.TUNNEL_LIMIT_REACHED, `Account has reached the limit of ${this.cfg.maxTunnels} tunnels`);
    }
    const createdAt = nowIso();
    const t: TunnelRecord = {
      id: randomUUID(),
      name,
      createdAt,
      deletedAt: null,
      secret,
      token: '',
      configSrc,
      connectors: new Map(),
      connsActiveAt: null,
      connsInactiveAt: createdAt,
      everConnected: false,
      configuration: null,
    };
    t.token = encodeTunnelToken(this.cfg.accountId, t.id, secret);
    this.#tunnels.set(t.id, t);
    this.#liveByName.set(name, t.id);
    return ok({
      ...this.#tunnelJson(t),
      // Untyped in the SDK but sent by the live API; brokers read the token from here.
      token: t.token,
      credentials_file: { AccountTag: this.cfg.accountId, TunnelID: t.id, TunnelName: t.name, TunnelSecret: secret },
    });
  }

  #listTunnels(query: URLSearchParams): ApiReply {
    const { page, perPage } = parsePaging(query, TUNNEL_PER_PAGE_DEFAULT, TUNNEL_PER_PAGE_MAX, badTunnelRequest);
    const name = query.get('name');
    const uuid = query.get('uuid');
    const isDeleted = parseBool(query.get('is_deleted'), 'is_deleted', badTunnelRequest);
    const existedAt = parseTime(query.get('existed_at'), 'existed_at');
    const wasActiveAt = parseTime(query.get('was_active_at'), 'was_active_at');
    const wasInactiveAt = parseTime(query.get('was_inactive_at'), 'was_inactive_at');
    // cloudflared sends name_prefix; the SDK sends include_prefix.
    const include = query.get('include_prefix') || query.get('name_prefix');
    const exclude = query.get('exclude_prefix');
    const status = query.get('status');
    if (status && !['inactive', 'degraded', 'healthy', 'down'].includes(status)) {
      throw badTunnelRequest('status must be one of inactive, degraded, healthy, down');
    }
    const items: TunnelRecord[] = [];
    for (const t of this.#tunnels.values()) {
      if (name && t.name !== name) continue;
      if (uuid && t.id !== uuid) continue;
      if (isDeleted === true && t.deletedAt === null) continue;
      if (isDeleted === false && t.deletedAt !== null) continue;
      if (existedAt !== undefined) {
        if (Date.parse(t.createdAt) > existedAt) continue;
        if (t.deletedAt !== null && Date.parse(t.deletedAt) <= existedAt) continue;
      }
      // Approximation: judged from the latest active/inactive transition only.
      if (wasActiveAt !== undefined && (t.connsActiveAt === null || Date.parse(t.connsActiveAt) > wasActiveAt)) continue;
      if (wasInactiveAt !== undefined && (t.connsInactiveAt === null || Date.parse(t.connsInactiveAt) > wasInactiveAt)) continue;
      if (include && !t.name.startsWith(include)) continue;
      if (exclude && t.name.startsWith(exclude)) continue;
      if (status && this.#status(t) !== status) continue;
      items.push(t);
    }
    const { slice, info } = paginate(items, page, perPage);
    return ok(
      slice.map((t) => this.#tunnelJson(t)),
      info,
    );
  }

  #editTunnel(id: string, body: unknown): ApiReply {
    const t = this.#tunnel(id);
    const b = asObject(body, 'update tunnel');
    const name = b.name === undefined ? undefined : this.#validName(b.name);
    const secret = b.tunnel_secret === undefined ? undefined : this.#validSecret(b.tunnel_secret);
    if (name !== undefined && name !== t.name) {
      if (this.#liveByName.has(name)) {
        throw new ApiFailure(409, ErrorCode.TUNNEL_NAME_CONFLICT, 'Tunnel with name already exists');
      }
      this.#liveByName.delete(t.name);
      this.#liveByName.set(name, t.id);
      t.name = name;
    }
    if (secret !== undefined) {
      t.secret = secret;
      t.token = encodeTunnelToken(this.cfg.accountId, t.id, secret);
    }
    return ok(this.#tunnelJson(t));
  }

  #deleteTunnel(id: string, cascade: boolean, requestIndex: number): ApiReply {
    const t = this.#tunnel(id);
    if (t.connectors.size > 0) {
      if (!cascade) {
        throw new ApiFailure(400, ErrorCode.TUNNEL_HAS_CONNECTIONS, 'Cannot delete tunnel because it has active connections');
      }
      this.#dropConnectors(t, undefined);
    }
    t.deletedAt = nowIso();
    this.#liveByName.delete(t.name);
    this.#deletions.push({ resource: 'tunnel', id: t.id, name: t.name, deletedAt: t.deletedAt, requestIndex });
    return ok(this.#tunnelJson(t));
  }

  #putConfiguration(id: string, body: unknown): ApiReply {
    const t = this.#tunnel(id);
    const b = asObject(body, 'update configuration');
    const config = b.config;
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw badTunnelRequest('config must be an object');
    }
    validateIngress((config as Record<string, unknown>).ingress);
    t.configuration = {
      tunnel_id: t.id,
      account_id: this.cfg.accountId,
      version: (t.configuration?.version ?? 0) + 1,
      config: structuredClone(config),
      source: 'cloudflare',
      created_at: nowIso(),
    };
    // Pushing a remote configuration is what makes a tunnel remotely managed.
    t.configSrc = 'cloudflare';
    return ok(structuredClone(t.configuration));
  }

  #getConfiguration(id: string): ApiReply {
    const t = this.#tunnel(id);
    if (t.configuration) return ok(structuredClone(t.configuration));
    return ok({
      tunnel_id: t.id,
      account_id: this.cfg.accountId,
      version: 0,
      config: null,
      source: t.configSrc,
      created_at: t.createdAt,
    });
  }

  #status(t: TunnelRecord): TunnelStatus {
    if (t.connectors.size > 0) return 'healthy';
    return t.everConnected ? 'down' : 'inactive';
  }

  #connections(t: TunnelRecord): EmulatedConnection[] {
    return [...t.connectors.values()].flatMap((c) => c.conns.map((conn) => ({ ...conn })));
  }

  #tunnelJson(t: TunnelRecord) {
    return {
      id: t.id,
      account_tag: this.cfg.accountId,
      created_at: t.createdAt,
      deleted_at: t.deletedAt,
      name: t.name,
      connections: this.#connections(t),
      conns_active_at: t.connsActiveAt,
      conns_inactive_at: t.connsInactiveAt,
      tun_type: 'cfd_tunnel' as const,
      status: this.#status(t),
      remote_config: t.configSrc === 'cloudflare',
      config_src: t.configSrc,
      metadata: {},
    };
  }

  #connectorJson(t: TunnelRecord, c: ConnectorRecord) {
    return {
      id: c.id,
      arch: 'linux_amd64',
      config_version: t.configuration?.version ?? 0,
      conns: c.conns.map((conn) => ({ ...conn })),
      features: ['serialized_headers', 'support_datagram_v3_2'],
      run_at: c.runAt,
      version: CLOUDFLARED_VERSION,
    };
  }

  #dropConnectors(t: TunnelRecord, connectorId: string | undefined): number {
    let removed = 0;
    if (connectorId === undefined) {
      removed = t.connectors.size;
      t.connectors.clear();
    } else if (t.connectors.delete(connectorId)) {
      removed = 1;
    }
    if (removed > 0 && t.connectors.size === 0) t.connsInactiveAt = nowIso();
    return removed;
  }

  // ---- Access --------------------------------------------------------------

  #logGates(endpoint: EndpointName, requestIndex: number): void {
    const ungated = [...this.#dns.values()].filter((r) => r.proxied && this.#access.gateOf(r.name) === undefined).map((r) => r.name);
    this.#gateLog.push({ requestIndex, endpoint, ungated });
  }

  accessApps(): EmulatedAccessApp[] {
    return this.#access.apps();
  }

  accessPolicies(): EmulatedAccessPolicy[] {
    return this.#access.policies();
  }

  audience(hostname: string): AccessAudience {
    return this.#access.audience(hostname);
  }

  canOpen(hostname: string, email: string | null): boolean {
    return this.#access.canOpen(hostname, email);
  }

  gateLog(): GateLogEntry[] {
    return this.#gateLog.map((e) => ({ ...e, ungated: [...e.ungated] }));
  }

  // ---- in-process / control access ----------------------------------------

  snapshot(t: TunnelRecord): EmulatedTunnel {
    return {
      ...this.#tunnelJson(t),
      tunnel_secret: t.secret,
      token: t.token,
      connector_ids: [...t.connectors.keys()],
      configuration: t.configuration ? structuredClone(t.configuration) : null,
    };
  }

  liveTunnels(): EmulatedTunnel[] {
    return [...this.#tunnels.values()].filter((t) => t.deletedAt === null).map((t) => this.snapshot(t));
  }

  allTunnels(): EmulatedTunnel[] {
    return [...this.#tunnels.values()].map((t) => this.snapshot(t));
  }

  dnsRecords(): EmulatedDnsRecord[] {
    return [...this.#dns.values()].map((r) => structuredClone(r));
  }

  deletions(): DeletionRecord[] {
    return this.#deletions.map((d) => ({ ...d }));
  }

  configuration(tunnelId: string): TunnelConfiguration | undefined {
    const c = this.#tunnels.get(tunnelId)?.configuration;
    return c ? structuredClone(c) : undefined;
  }

  /** Throws ApiFailure (404) for unknown or deleted tunnels. */
  addConnection(tunnelId: string): string {
    const t = this.#tunnel(tunnelId);
    const now = nowIso();
    const clientId = randomUUID();
    const conns: EmulatedConnection[] = [];
    for (let i = 0; i < CONNS_PER_CONNECTOR; i++) {
      const id = randomUUID();
      conns.push({
        id,
        client_id: clientId,
        client_version: CLOUDFLARED_VERSION,
        colo_name: COLOS[i % COLOS.length]!,
        is_pending_reconnect: false,
        opened_at: now,
        origin_ip: '198.51.100.7',
        uuid: id,
      });
    }
    if (t.connectors.size === 0) {
      t.connsActiveAt = now;
      t.connsInactiveAt = null;
    }
    t.connectors.set(clientId, { id: clientId, runAt: now, conns });
    t.everConnected = true;
    return clientId;
  }

  /** Throws ApiFailure (404) for unknown or deleted tunnels; an unknown connector id is a no-op. */
  removeConnections(tunnelId: string, connectorId?: string): number {
    return this.#dropConnectors(this.#tunnel(tunnelId), connectorId);
  }

  // ---- DNS -----------------------------------------------------------------

  #dnsRecord(id: string): EmulatedDnsRecord {
    const rec = this.#dns.get(id);
    if (!rec) throw new ApiFailure(404, ErrorCode.DNS_RECORD_NOT_FOUND, 'Record does not exist.');
    return rec;
  }

  /** The live API completes a relative name with the zone and answers in lower case. */
  #normalizeName(raw: string): string {
    const zone = this.cfg.zoneName.toLowerCase();
    let name = raw.trim().toLowerCase().replace(/\.$/, '');
    if (name === '@' || name === '') return zone;
    if (name !== zone && !name.endsWith(`.${zone}`)) name = `${name}.${zone}`;
    return name;
  }

  #indexDns(rec: EmulatedDnsRecord): void {
    let ids = this.#dnsByName.get(rec.name);
    if (!ids) this.#dnsByName.set(rec.name, (ids = new Set()));
    ids.add(rec.id);
  }

  #unindexDns(rec: EmulatedDnsRecord): void {
    const ids = this.#dnsByName.get(rec.name);
    ids?.delete(rec.id);
    if (ids?.size === 0) this.#dnsByName.delete(rec.name);
  }

  #writeDns(id: string | undefined, body: unknown, mode: 'create' | 'patch' | 'put'): EmulatedDnsRecord {
    const existing = id === undefined ? undefined : this.#dnsRecord(id);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw dnsInvalid('request body must be a JSON object');
    const b = body as Record<string, unknown>;
    const base = mode === 'patch' ? existing : undefined;

    const type = b.type ?? base?.type;
    if (typeof type !== 'string' || !DNS_TYPES.has(type)) throw dnsInvalid('type must be a valid DNS record type');
    const rawName = b.name ?? base?.name;
    if (typeof rawName !== 'string' || rawName.trim() === '') throw dnsInvalid('name is required');
    const name = this.#normalizeName(rawName);
    if (!HOSTNAME_RE.test(name)) throw dnsInvalid(`name '${rawName}' is not a valid hostname`);
    const content = b.content ?? base?.content;
    if (typeof content !== 'string' || content === '') throw dnsInvalid('content is required');
    if (type === 'A' && !isIPv4(content)) throw dnsInvalid('Content for A record must be a valid IPv4 address');
    if (type === 'AAAA' && !isIPv6(content)) throw dnsInvalid('Content for AAAA record must be a valid IPv6 address');
    if (type === 'CNAME') {
      const target = content.toLowerCase().replace(/\.$/, '');
      if (!HOSTNAME_RE.test(target)) throw dnsInvalid('Content for CNAME record is invalid');
      if (target === name) throw dnsInvalid('CNAME content must not match the record name');
    }
    const proxied = b.proxied ?? base?.proxied ?? false;
    if (typeof proxied !== 'boolean') throw dnsInvalid('proxied must be a boolean');
    if (proxied && !PROXIABLE_TYPES.has(type)) throw dnsInvalid(`${type} records cannot be proxied`);
    const rawTtl = b.ttl ?? base?.ttl ?? 1;
    if (typeof rawTtl !== 'number' || !Number.isInteger(rawTtl) || !(rawTtl === 1 || (rawTtl >= 60 && rawTtl <= 86400))) {
      throw dnsInvalid('ttl must be 1 (automatic) or between 60 and 86400');
    }
    // Proxied records are always served with automatic TTL.
    const ttl = proxied ? 1 : rawTtl;
    const comment = b.comment === undefined ? (base?.comment ?? null) : b.comment;
    if (comment !== null && typeof comment !== 'string') throw dnsInvalid('comment must be a string');
    const tags = b.tags === undefined ? (base?.tags ?? []) : b.tags;
    if (!Array.isArray(tags) || !tags.every((x) => typeof x === 'string')) throw dnsInvalid('tags must be an array of strings');
    const settings = b.settings === undefined ? (base?.settings ?? {}) : b.settings;
    if (typeof settings !== 'object' || settings === null || Array.isArray(settings)) throw dnsInvalid('settings must be an object');

    this.#checkDnsConflicts(existing?.id, type, name, content);

    const now = nowIso();
    const rec: EmulatedDnsRecord = {
      id: existing?.id ?? randomBytes(16).toString('hex'),
      zone_id: this.cfg.zoneId,
      zone_name: this.cfg.zoneName,
      name,
      type,
      content,
      proxiable: PROXIABLE_TYPES.has(type),
      proxied,
      ttl,
      comment: comment === '' ? null : (comment as string | null),
      tags: [...(tags as string[])],
      settings: structuredClone(settings as Record<string, unknown>),
      meta: {},
      created_on: existing?.created_on ?? now,
      modified_on: now,
    };
    if (existing) this.#unindexDns(existing);
    this.#dns.set(rec.id, rec);
    this.#indexDns(rec);
    return structuredClone(rec);
  }

  #checkDnsConflicts(selfId: string | undefined, type: string, name: string, content: string): void {
    const ids = this.#dnsByName.get(name);
    if (!ids) return;
    for (const otherId of ids) {
      if (otherId === selfId) continue;
      const other = this.#dns.get(otherId)!;
      if (type === 'CNAME' || other.type === 'CNAME') {
        throw new ApiFailure(400, ErrorCode.DNS_HOST_CONFLICT, 'An A, AAAA, or CNAME record with that host already exists.');
      }
      if (other.type === type && other.content === content) {
        throw new ApiFailure(400, ErrorCode.DNS_IDENTICAL_RECORD, 'An identical record already exists.');
      }
    }
  }

  #listDns(query: URLSearchParams): ApiReply {
    for (const key of query.keys()) {
      const root = key.split('.')[0]!;
      if (UNSUPPORTED_DNS_FILTERS.includes(root)) {
        throw dnsInvalid(`the emulator does not support the '${key}' filter`);
      }
    }
    const { page, perPage } = parsePaging(query, DNS_PER_PAGE_DEFAULT, DNS_PER_PAGE_MAX, dnsInvalid);
    const predicates: ((r: EmulatedDnsRecord) => boolean)[] = [];

    const text = (field: 'name' | 'content' | 'comment', norm: (s: string) => string) => {
      const value = (r: EmulatedDnsRecord) => norm(r[field] ?? '');
      // A plain `name=` is the exact match the v4 API has always accepted; the SDK sends `name.exact=`.
      const exact = query.get(field) ?? query.get(`${field}.exact`);
      if (exact !== null) predicates.push((r) => value(r) === norm(exact));
      const contains = query.get(`${field}.contains`);
      if (contains !== null) predicates.push((r) => value(r).includes(norm(contains)));
      const starts = query.get(`${field}.startswith`);
      if (starts !== null) predicates.push((r) => value(r).startsWith(norm(starts)));
      const ends = query.get(`${field}.endswith`);
      if (ends !== null) predicates.push((r) => value(r).endsWith(norm(ends)));
    };
    const lowerHost = (s: string) => s.trim().toLowerCase().replace(/\.$/, '');
    text('name', lowerHost);
    text('content', (s) => s.toLowerCase());
    text('comment', (s) => s);
    if (query.has('comment.present')) predicates.push((r) => !!r.comment);
    if (query.has('comment.absent')) predicates.push((r) => !r.comment);
    const type = query.get('type');
    if (type) predicates.push((r) => r.type === type);
    const proxied = parseBool(query.get('proxied'), 'proxied', dnsInvalid);
    if (proxied !== undefined) predicates.push((r) => r.proxied === proxied);

    const match = query.get('match') ?? 'all';
    if (match !== 'all' && match !== 'any') throw dnsInvalid("match must be 'all' or 'any'");
    const keep =
      predicates.length === 0
        ? () => true
        : match === 'all'
          ? (r: EmulatedDnsRecord) => predicates.every((f) => f(r))
          : (r: EmulatedDnsRecord) => predicates.some((f) => f(r));
    const items = [...this.#dns.values()].filter(keep);

    const order = query.get('order');
    if (order) {
      if (!['type', 'name', 'content', 'ttl', 'proxied'].includes(order)) {
        throw dnsInvalid('order must be one of type, name, content, ttl, proxied');
      }
      const dir = query.get('direction') === 'desc' ? -1 : 1;
      const key = order as 'type' | 'name' | 'content' | 'ttl' | 'proxied';
      items.sort((a, b) => (a[key] < b[key] ? -dir : a[key] > b[key] ? dir : 0));
    }
    const { slice, info } = paginate(items, page, perPage);
    return ok(
      slice.map((r) => structuredClone(r)),
      info,
    );
  }
}

/**
 * The live API refuses a remote configuration whose ingress does not end with a
 * catch-all rule, as cloudflared does; a broker that forgets it would pass here and
 * fail in production otherwise.
 */
function validateIngress(ingress: unknown): void {
  if (ingress === undefined) return;
  if (!Array.isArray(ingress)) throw badTunnelRequest('config.ingress must be an array');
  ingress.forEach((rule, i) => {
    if (typeof rule !== 'object' || rule === null || typeof (rule as { service?: unknown }).service !== 'string') {
      throw badTunnelRequest(`config.ingress[${i}] must be an object with a service`);
    }
  });
  const last = ingress.at(-1) as { hostname?: unknown; path?: unknown } | undefined;
  if (last && (last.hostname || last.path)) {
    throw badTunnelRequest(
      'The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)',
    );
  }
}
