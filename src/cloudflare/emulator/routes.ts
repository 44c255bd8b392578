import type { EndpointName } from './types.js';

export interface RouteParams {
  accountId?: string;
  zoneId?: string;
  tunnelId?: string;
  connectorId?: string;
  recordId?: string;
  appId?: string;
  policyId?: string;
}

export type RouteMatch =
  | { kind: 'found'; endpoint: EndpointName; params: RouteParams }
  | { kind: 'wrongMethod'; params: RouteParams }
  | { kind: 'none' };

interface Route {
  pattern: RegExp;
  keys: (keyof RouteParams)[];
  methods: Partial<Record<string, EndpointName>>;
}

const SEG = '([^/]+)';

const ROUTES: Route[] = [
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel$`),
    keys: ['accountId'],
    methods: { POST: 'tunnel.create', GET: 'tunnel.list' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel/${SEG}$`),
    keys: ['accountId', 'tunnelId'],
    methods: { GET: 'tunnel.get', PATCH: 'tunnel.edit', DELETE: 'tunnel.delete' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel/${SEG}/configurations$`),
    keys: ['accountId', 'tunnelId'],
    methods: { PUT: 'tunnel.configuration.put', GET: 'tunnel.configuration.get' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel/${SEG}/connections$`),
    keys: ['accountId', 'tunnelId'],
    methods: { GET: 'tunnel.connections.list', DELETE: 'tunnel.connections.delete' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel/${SEG}/connectors/${SEG}$`),
    keys: ['accountId', 'tunnelId', 'connectorId'],
    methods: { GET: 'tunnel.connector.get' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/cfd_tunnel/${SEG}/token$`),
    keys: ['accountId', 'tunnelId'],
    methods: { GET: 'tunnel.token' },
  },
  {
    pattern: new RegExp(`^/zones/${SEG}/dns_records$`),
    keys: ['zoneId'],
    methods: { POST: 'dns.create', GET: 'dns.list' },
  },
  {
    pattern: new RegExp(`^/zones/${SEG}/dns_records/${SEG}$`),
    keys: ['zoneId', 'recordId'],
    methods: { GET: 'dns.get', PATCH: 'dns.edit', PUT: 'dns.update', DELETE: 'dns.delete' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/access/apps$`),
    keys: ['accountId'],
    methods: { POST: 'access.app.create', GET: 'access.app.list' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/access/apps/${SEG}$`),
    keys: ['accountId', 'appId'],
    methods: { GET: 'access.app.get', PUT: 'access.app.update', DELETE: 'access.app.delete' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/access/policies$`),
    keys: ['accountId'],
    methods: { POST: 'access.policy.create', GET: 'access.policy.list' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/access/policies/${SEG}$`),
    keys: ['accountId', 'policyId'],
    methods: { GET: 'access.policy.get', PUT: 'access.policy.update', DELETE: 'access.policy.delete' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/access/identity_providers$`),
    keys: ['accountId'],
    methods: { GET: 'access.identity_providers.list' },
  },
  // What `tunnel-broker doctor` reads to check the credentials.
  {
    pattern: new RegExp(`^/zones/${SEG}$`),
    keys: ['zoneId'],
    methods: { GET: 'zone.get' },
  },
  {
    pattern: /^\/user\/tokens\/verify$/,
    keys: [],
    methods: { GET: 'user.tokens.verify' },
  },
  {
    pattern: new RegExp(`^/accounts/${SEG}/tokens/verify$`),
    keys: ['accountId'],
    methods: { GET: 'account.tokens.verify' },
  },
];

/** `pathname` is relative to /client/v4, without query string. */
export function matchRoute(method: string, pathname: string): RouteMatch {
  const path = pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    const params: RouteParams = {};
    route.keys.forEach((key, i) => {
      params[key] = safeDecode(m[i + 1] ?? '');
    });
    const endpoint = route.methods[method.toUpperCase()];
    // Several routes share a prefix but never a full pattern, so the first match is the only one.
    return endpoint ? { kind: 'found', endpoint, params } : { kind: 'wrongMethod', params };
  }
  return { kind: 'none' };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
