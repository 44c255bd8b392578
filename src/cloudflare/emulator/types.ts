import type { Logger } from 'pino';

export interface EmulatorOptions {
  host?: string;
  port?: number;
  accountId?: string;
  zoneId?: string;
  zoneName?: string;
  /** Requests to /client/v4 with any other Bearer token get 403 {code 10000}. */
  apiToken?: string;
  logger?: Logger;
  /** Seed of the PRNG that decides `probability` faults; same seed, same sequence. */
  seed?: number;
  /** Live (not soft-deleted) tunnels an account may hold; the real limit is 1000. */
  maxTunnels?: number;
}

export type EndpointName =
  | 'tunnel.create'
  | 'tunnel.list'
  | 'tunnel.get'
  | 'tunnel.edit'
  | 'tunnel.delete'
  | 'tunnel.configuration.put'
  | 'tunnel.configuration.get'
  | 'tunnel.connections.list'
  | 'tunnel.connections.delete'
  | 'tunnel.connector.get'
  | 'tunnel.token'
  | 'dns.create'
  | 'dns.list'
  | 'dns.get'
  | 'dns.edit'
  | 'dns.update'
  | 'dns.delete'
  | 'zone.get'
  | 'user.tokens.verify'
  | 'account.tokens.verify'
  | 'access.app.create'
  | 'access.app.list'
  | 'access.app.get'
  | 'access.app.update'
  | 'access.app.delete'
  | 'access.policy.create'
  | 'access.policy.list'
  | 'access.policy.get'
  | 'access.policy.update'
  | 'access.policy.delete'
  | 'access.identity_providers.list';

export type FaultKind = 'error5xx' | 'rateLimit' | 'hang' | 'latency' | 'lostResponse';

export interface FaultRule {
  method?: string;
  endpoint?: EndpointName;
  /** Substring of the path relative to the API base, query string included. */
  pathIncludes?: string;
  kind: FaultKind;
  /** error5xx only; default 500. */
  status?: number;
  /** rateLimit only; default 1. Sent as the `retry-after` header (fractions allowed). */
  retryAfterSec?: number;
  /** latency only; default 100. */
  latencyMs?: number;
  /** lostResponse only: answer 502 (default) or reset the connection. */
  lostAs?: 'status502' | 'socketReset';
  /** Applies to the next N matching requests, then expires; default unlimited. */
  times?: number;
  /** 0..1, default 1; drawn from the seeded PRNG. */
  probability?: number;
}

export interface ActiveFault extends FaultRule {
  id: string;
  /** Applications left; undefined = unlimited. */
  remaining?: number;
  applied: number;
}

export interface RequestLogEntry {
  readonly method: string;
  /** Relative to the API base (`/client/v4`), query string included. */
  readonly path: string;
  readonly endpoint: EndpointName | 'unknown';
  /** Status the client saw; 0 while pending, for hung requests, and for reset connections. */
  readonly status: number;
  /** Which fault, if any, shaped the answer. */
  readonly fault?: FaultKind;
}

export type TunnelStatus = 'inactive' | 'degraded' | 'healthy' | 'down';

export interface EmulatedConnection {
  id: string;
  client_id: string;
  client_version: string;
  colo_name: string;
  is_pending_reconnect: boolean;
  opened_at: string;
  origin_ip: string;
  uuid: string;
}

export interface TunnelConfiguration {
  tunnel_id: string;
  account_id: string;
  version: number;
  config: unknown;
  source: 'local' | 'cloudflare';
  created_at: string;
}

export interface EmulatedTunnel {
  id: string;
  account_tag: string;
  name: string;
  created_at: string;
  deleted_at: string | null;
  status: TunnelStatus;
  tun_type: 'cfd_tunnel';
  config_src: 'local' | 'cloudflare';
  remote_config: boolean;
  conns_active_at: string | null;
  conns_inactive_at: string | null;
  connections: EmulatedConnection[];
  metadata: Record<string, unknown>;
  /** Base64 tunnel secret, as the token's `s`. */
  tunnel_secret: string;
  /** The cloudflared token: base64 of {"a","t","s"}. */
  token: string;
  connector_ids: string[];
  /** Last PUT configuration, or null. */
  configuration: TunnelConfiguration | null;
}

export interface EmulatedDnsRecord {
  id: string;
  zone_id: string;
  zone_name: string;
  name: string;
  type: string;
  content: string;
  proxiable: boolean;
  proxied: boolean;
  ttl: number;
  comment: string | null;
  tags: string[];
  settings: Record<string, unknown>;
  meta: Record<string, unknown>;
  created_on: string;
  modified_on: string;
}

export interface EmulatedAccessApp {
  id: string;
  aud: string;
  name: string;
  type: 'self_hosted';
  domain: string;
  self_hosted_domains: string[];
  session_duration: string;
  /** Reusable policies by id, with their precedence (1 first). */
  policies: Array<{ id: string; precedence: number }>;
  created_at: string;
  updated_at: string;
}

export interface EmulatedAccessPolicy {
  id: string;
  name: string;
  decision: 'allow' | 'deny' | 'non_identity' | 'bypass';
  include: Array<Record<string, unknown>>;
  exclude: Array<Record<string, unknown>>;
  require: Array<Record<string, unknown>>;
  reusable: true;
  created_at: string;
  updated_at: string;
}

/** Who can open a hostname, by the most specific Access application that covers it. */
export type AccessAudience =
  | { gate: 'none' }
  | { gate: 'public'; appId: string; appName: string }
  | { gate: 'login'; appId: string; appName: string; emails: string[]; emailDomains: string[] };

/**
 * After a request that changed DNS records or Access applications: the proxied DNS records
 * that then had no Access application over them. Lets a test prove a hostname never
 * resolved without its gate.
 */
export interface GateLogEntry {
  requestIndex: number;
  endpoint: EndpointName;
  ungated: string[];
}

export interface EmulatorState {
  url: string;
  accountId: string;
  zoneId: string;
  zoneName: string;
  latencyMs: number;
  /** Every tunnel, soft-deleted ones included. */
  tunnels: EmulatedTunnel[];
  dnsRecords: EmulatedDnsRecord[];
  accessApps: EmulatedAccessApp[];
  accessPolicies: EmulatedAccessPolicy[];
  requestCounts: Partial<Record<EndpointName | 'unknown', number>>;
  totalRequests: number;
  faults: ActiveFault[];
}

/** One successful delete: the tunnel soft-deleted, or the DNS record removed. */
export interface DeletionRecord {
  resource: 'tunnel' | 'dns_record';
  id: string;
  /** The tunnel's name, or the record's hostname. */
  name: string;
  /** DNS records: the record's content (a CNAME's target). */
  content?: string;
  deletedAt: string;
  /** Index in `requests` of the request that deleted it. */
  requestIndex: number;
}

export interface RequestMatch {
  method?: string;
  endpoint?: EndpointName | 'unknown';
  pathIncludes?: string;
  /** Only resolve once the request has been answered (status ≠ 0 or it hung/reset). */
  answered?: boolean;
}

export interface CloudflareEmulator {
  /** Base URL for the SDK's `baseURL`, e.g. http://127.0.0.1:43121/client/v4 */
  readonly url: string;
  /** Where the /__emulator control API lives, e.g. http://127.0.0.1:43121/__emulator */
  readonly controlUrl: string;
  readonly accountId: string;
  readonly zoneId: string;
  readonly zoneName: string;
  readonly apiToken: string;
  injectFault(rule: FaultRule): () => void;
  clearFaults(): void;
  faults(): ActiveFault[];
  setLatency(ms: number): void;
  /** Tunnels not soft-deleted. */
  liveTunnels(): EmulatedTunnel[];
  allTunnels(): EmulatedTunnel[];
  dnsRecords(): EmulatedDnsRecord[];
  accessApps(): EmulatedAccessApp[];
  accessPolicies(): EmulatedAccessPolicy[];
  /** Who can open `hostname` now, by the most specific Access application (test-only). */
  audience(hostname: string): AccessAudience;
  /** Whether a visitor logged in as `email` (null: anonymous) gets through to `hostname`. */
  canOpen(hostname: string, email: string | null): boolean;
  /** One entry per request that changed DNS records or Access applications (see GateLogEntry). */
  gateLog(): GateLogEntry[];
  /** The stored configuration record (same shape as the GET configurations result), if any was PUT. */
  configuration(tunnelId: string): TunnelConfiguration | undefined;
  /** Simulate a cloudflared connector attached to the tunnel (so plain delete fails with 1022). Returns the connector (client) id. */
  addConnection(tunnelId: string): string;
  /** Detach one connector, or all; returns how many were removed. */
  removeConnections(tunnelId: string, connectorId?: string): number;
  /** Every request seen, in arrival order. */
  readonly requests: ReadonlyArray<RequestLogEntry>;
  count(endpoint: EndpointName | 'unknown'): number;
  /**
   * Every successful delete, in order. Recorded when the store removes the object, so a
   * delete whose response was lost (or came after the client gave up) counts, and a
   * delete of something already gone (404) does not.
   */
  deletions(): DeletionRecord[];
  /** Resolves with the first logged request (past or future) that matches; rejects after timeoutMs (default 5000). */
  waitForRequest(match: RequestMatch, timeoutMs?: number): Promise<RequestLogEntry>;
  state(): EmulatorState;
  /** Wipe state, faults, latency, request log, deletions, and re-seed the PRNG. */
  reset(): void;
  close(): Promise<void>;
}
