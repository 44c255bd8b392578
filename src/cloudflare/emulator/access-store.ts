import { randomBytes, randomUUID } from 'node:crypto';
import { ApiFailure, ErrorCode, ok, type ApiReply, type ResultInfo } from './envelope.js';
import type { RouteParams } from './routes.js';
import type { AccessAudience, EmulatedAccessApp, EmulatedAccessPolicy, EndpointName } from './types.js';

/** Account limits from Cloudflare's documentation (seeds README): 500 applications, 500 reusable policies, 5 domains per application. */
export const MAX_ACCESS_APPS = 500;
export const MAX_ACCESS_POLICIES = 500;
const MAX_DOMAINS_PER_APP = 5;
const PER_PAGE_DEFAULT = 25;
const PER_PAGE_MAX = 1000;
const DECISIONS = new Set(['allow', 'deny', 'non_identity', 'bypass']);
const DURATION_RE = /^[0-9]+(\.[0-9]+)?(s|m|h)$/;
const HOST_RE = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\/.*)?$/;

function nowIso(): string {
  return new Date().toISOString();
}

function invalid(message: string): ApiFailure {
  return new ApiFailure(400, ErrorCode.ACCESS_INVALID, message);
}

function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('request body must be a JSON object');
  return body as Record<string, unknown>;
}

function paging(query: URLSearchParams): { page: number; perPage: number } {
  const parse = (name: string, fallback: number): number => {
    const raw = query.get(name);
    if (raw === null || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw invalid(`${name} must be a positive integer`);
    return n;
  };
  const perPage = parse('per_page', PER_PAGE_DEFAULT);
  if (perPage > PER_PAGE_MAX) throw invalid(`per_page must be at most ${PER_PAGE_MAX}`);
  return { page: parse('page', 1), perPage };
}

function paginated<T>(items: T[], query: URLSearchParams): ApiReply {
  const { page, perPage } = paging(query);
  const slice = items.slice((page - 1) * perPage, page * perPage);
  const info: ResultInfo = { page, per_page: perPage, count: slice.length, total_count: items.length, total_pages: Math.ceil(items.length / perPage) };
  return ok(slice, info);
}

/** The host part of an application domain (`host/path` → `host`). */
function hostOf(domain: string): string {
  return domain.toLowerCase().split('/')[0]!;
}

/**
 * How specifically `domain` covers `hostname`: 2 for the very hostname, 1 for a one-level
 * wildcard (`*.example.com` covers `a.example.com`, not `a.b.example.com` nor `example.com`),
 * 0 for not at all. Cloudflare enforces the most specific application that covers a request
 * (https://developers.cloudflare.com/cloudflare-one/access-controls/policies/app-paths/).
 */
function coverage(domain: string, hostname: string): number {
  const host = hostOf(domain);
  if (host === hostname) return 2;
  if (host.startsWith('*.')) {
    const parent = host.slice(2);
    const dot = hostname.indexOf('.');
    if (dot > 0 && hostname.slice(dot + 1) === parent) return 1;
  }
  return 0;
}

type Rule = Record<string, unknown>;

function ruleMatches(rule: Rule, email: string | null): boolean {
  if ('everyone' in rule) return true;
  if (email === null) return false;
  const byEmail = rule.email as { email?: unknown } | undefined;
  if (byEmail && typeof byEmail.email === 'string') return byEmail.email.toLowerCase() === email;
  const byDomain = rule.email_domain as { domain?: unknown } | undefined;
  if (byDomain && typeof byDomain.domain === 'string') return email.endsWith(`@${byDomain.domain.toLowerCase()}`);
  return false;
}

/**
 * Access applications (self_hosted) and reusable policies of the one account, at
 * /accounts/{id}/access/apps and /accounts/{id}/access/policies, plus the identity providers
 * `doctor` lists. Policies are attached to applications by id; a policy in use cannot be
 * deleted. For tests it answers which audience a hostname has.
 */
export class AccessStore {
  readonly #apps = new Map<string, EmulatedAccessApp>();
  readonly #policies = new Map<string, EmulatedAccessPolicy>();

  reset(): void {
    this.#apps.clear();
    this.#policies.clear();
  }

  dispatch(endpoint: EndpointName, p: RouteParams, query: URLSearchParams, body: unknown): ApiReply | undefined {
    switch (endpoint) {
      case 'access.app.create':
        return ok(this.#appJson(this.#writeApp(undefined, body)));
      case 'access.app.list':
        return paginated(this.#listApps(query).map((a) => this.#appJson(a)), query);
      case 'access.app.get':
        return ok(this.#appJson(this.#app(p.appId!)));
      case 'access.app.update':
        return ok(this.#appJson(this.#writeApp(p.appId!, body)));
      case 'access.app.delete': {
        const app = this.#app(p.appId!);
        this.#apps.delete(app.id);
        return ok({ id: app.id });
      }
      case 'access.policy.create':
        return ok(this.#policyJson(this.#writePolicy(undefined, body)));
      case 'access.policy.list':
        return paginated([...this.#policies.values()].map((x) => this.#policyJson(x)), query);
      case 'access.policy.get':
        return ok(this.#policyJson(this.#policy(p.policyId!)));
      case 'access.policy.update':
        return ok(this.#policyJson(this.#writePolicy(p.policyId!, body)));
      case 'access.policy.delete': {
        const policy = this.#policy(p.policyId!);
        if (this.#appsUsing(policy.id) > 0) throw new ApiFailure(400, ErrorCode.ACCESS_POLICY_IN_USE, 'access.api.error.policy_in_use: the policy is attached to an application');
        this.#policies.delete(policy.id);
        return ok({ id: policy.id });
      }
      case 'access.identity_providers.list':
        return paginated([{ id: IDP_ID, name: 'One-time PIN', type: 'onetimepin', config: {} }], query);
      default:
        return undefined;
    }
  }

  #app(id: string): EmulatedAccessApp {
    const app = this.#apps.get(id);
    if (!app) throw new ApiFailure(404, ErrorCode.ACCESS_NOT_FOUND, 'access.api.error.not_found: application not found');
    return app;
  }

  #policy(id: string): EmulatedAccessPolicy {
    const policy = this.#policies.get(id);
    if (!policy) throw new ApiFailure(404, ErrorCode.ACCESS_NOT_FOUND, 'access.api.error.not_found: policy not found');
    return policy;
  }

  #appsUsing(policyId: string): number {
    return [...this.#apps.values()].filter((a) => a.policies.some((x) => x.id === policyId)).length;
  }

  #listApps(query: URLSearchParams): EmulatedAccessApp[] {
    const exact = query.get('exact') === 'true';
    const match = (value: string, wanted: string | null): boolean =>
      wanted === null || (exact ? value === wanted : value.toLowerCase().includes(wanted.toLowerCase()));
    return [...this.#apps.values()].filter((a) => match(a.name, query.get('name')) && match(a.domain, query.get('domain')));
  }

  #writeApp(id: string | undefined, body: unknown): EmulatedAccessApp {
    const b = asObject(body);
    const existing = id === undefined ? undefined : this.#app(id);
    if (b.type !== 'self_hosted') throw invalid('type: only self_hosted applications are emulated');
    if (typeof b.name !== 'string' || b.name.length === 0 || b.name.length > 350) throw invalid('name: required, 1-350 characters');
    if (typeof b.domain !== 'string' || !HOST_RE.test(b.domain.toLowerCase())) throw invalid('domain: required, a hostname (optionally *. and a path)');
    const domain = b.domain.toLowerCase();
    const extra = b.self_hosted_domains === undefined ? [domain] : b.self_hosted_domains;
    if (!Array.isArray(extra) || extra.some((d) => typeof d !== 'string' || !HOST_RE.test(d.toLowerCase()))) throw invalid('self_hosted_domains: hostnames');
    const domains = [...new Set([domain, ...(extra as string[]).map((d) => d.toLowerCase())])];
    if (domains.length > MAX_DOMAINS_PER_APP) throw invalid(`self_hosted_domains: at most ${MAX_DOMAINS_PER_APP} domains per application`);
    const session = b.session_duration ?? '24h';
    if (typeof session !== 'string' || !DURATION_RE.test(session)) throw invalid('session_duration: a duration such as 24h');
    const rawPolicies = b.policies ?? [];
    if (!Array.isArray(rawPolicies)) throw invalid('policies: an array');
    const policies = rawPolicies.map((entry, i) => {
      const ref = typeof entry === 'string' ? { id: entry } : (entry as { id?: unknown; precedence?: unknown });
      if (typeof ref !== 'object' || ref === null || typeof ref.id !== 'string') throw invalid('policies: reusable policy ids ({id, precedence})');
      if (!this.#policies.has(ref.id)) throw new ApiFailure(400, ErrorCode.ACCESS_INVALID, `policies: no reusable policy ${ref.id}`);
      const precedence = typeof ref.precedence === 'number' && Number.isInteger(ref.precedence) ? ref.precedence : i + 1;
      return { id: ref.id, precedence };
    });
    for (const other of this.#apps.values()) {
      if (other.id !== id && other.domain === domain) {
        throw new ApiFailure(400, ErrorCode.ACCESS_DOMAIN_TAKEN, `access.api.error.conflict: an application with domain ${domain} already exists`);
      }
    }
    if (!existing && this.#apps.size >= MAX_ACCESS_APPS) throw new ApiFailure(400, ErrorCode.ACCESS_LIMIT, `access.api.error.limit: an account holds at most ${MAX_ACCESS_APPS} applications`);
    const now = nowIso();
    const app: EmulatedAccessApp = {
      id: existing?.id ?? randomUUID(),
      aud: existing?.aud ?? randomBytes(32).toString('hex'),
      name: b.name,
      type: 'self_hosted',
      domain,
      self_hosted_domains: domains,
      session_duration: session,
      policies,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    this.#apps.set(app.id, app);
    return app;
  }

  #writePolicy(id: string | undefined, body: unknown): EmulatedAccessPolicy {
    const b = asObject(body);
    const existing = id === undefined ? undefined : this.#policy(id);
    if (typeof b.name !== 'string' || b.name.length === 0 || b.name.length > 350) throw invalid('name: required, 1-350 characters');
    if (typeof b.decision !== 'string' || !DECISIONS.has(b.decision)) throw invalid('decision: allow, deny, non_identity or bypass');
    const rules = (field: string): Rule[] => {
      const raw = b[field] ?? [];
      if (!Array.isArray(raw) || raw.some((r) => typeof r !== 'object' || r === null || Array.isArray(r) || Object.keys(r as object).length !== 1)) {
        throw invalid(`${field}: an array of rules, each an object with one key`);
      }
      return raw as Rule[];
    };
    const include = rules('include');
    if (include.length === 0) throw invalid('include: at least one rule');
    if (!existing && this.#policies.size >= MAX_ACCESS_POLICIES) throw new ApiFailure(400, ErrorCode.ACCESS_LIMIT, `access.api.error.limit: an account holds at most ${MAX_ACCESS_POLICIES} reusable policies`);
    const now = nowIso();
    const policy: EmulatedAccessPolicy = {
      id: existing?.id ?? randomUUID(),
      name: b.name,
      decision: b.decision as EmulatedAccessPolicy['decision'],
      include,
      exclude: rules('exclude'),
      require: rules('require'),
      reusable: true,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    this.#policies.set(policy.id, policy);
    return policy;
  }

  #appJson(app: EmulatedAccessApp) {
    return {
      ...structuredClone(app),
      policies: app.policies.map((ref) => {
        const policy = this.#policies.get(ref.id);
        return { ...(policy ? this.#policyJson(policy) : { id: ref.id }), precedence: ref.precedence };
      }),
    };
  }

  #policyJson(policy: EmulatedAccessPolicy) {
    return { ...structuredClone(policy), app_count: this.#appsUsing(policy.id) };
  }

  apps(): EmulatedAccessApp[] {
    return [...this.#apps.values()].map((a) => structuredClone(a));
  }

  policies(): EmulatedAccessPolicy[] {
    return [...this.#policies.values()].map((x) => structuredClone(x));
  }

  /** The application Cloudflare would enforce on `hostname`: the most specific that covers it. */
  gateOf(hostname: string): EmulatedAccessApp | undefined {
    const host = hostname.toLowerCase().replace(/\.$/, '');
    let best: { app: EmulatedAccessApp; score: number } | undefined;
    for (const app of this.#apps.values()) {
      const score = Math.max(...app.self_hosted_domains.map((d) => coverage(d, host)));
      if (score > 0 && (!best || score > best.score)) best = { app, score };
    }
    return best?.app;
  }

  /**
   * Who can open `hostname`, by the most specific application: `none` when no application
   * covers it (anyone can), `public` when its first matching policy lets everyone through
   * (bypass or allow everyone), else the emails and email domains its allow policies list.
   */
  audience(hostname: string): AccessAudience {
    const app = this.gateOf(hostname);
    if (!app) return { gate: 'none' };
    const policies = [...app.policies].sort((a, b) => a.precedence - b.precedence).map((ref) => this.#policies.get(ref.id)).filter((x) => x !== undefined);
    if (policies.some((x) => (x.decision === 'bypass' || x.decision === 'allow') && x.include.some((r) => 'everyone' in r))) {
      return { gate: 'public', appId: app.id, appName: app.name };
    }
    const allow = policies.filter((x) => x.decision === 'allow');
    const emails = allow.flatMap((x) => x.include.map((r) => (r.email as { email?: string } | undefined)?.email).filter((e): e is string => typeof e === 'string'));
    const domains = allow.flatMap((x) => x.include.map((r) => (r.email_domain as { domain?: string } | undefined)?.domain).filter((d): d is string => typeof d === 'string'));
    return { gate: 'login', appId: app.id, appName: app.name, emails: [...new Set(emails)].sort(), emailDomains: [...new Set(domains)].sort() };
  }

  /** Whether a visitor (logged in as `email`, or anonymous: null) gets through to `hostname`. */
  canOpen(hostname: string, email: string | null): boolean {
    const app = this.gateOf(hostname);
    if (!app) return true;
    const who = email?.toLowerCase() ?? null;
    const policies = [...app.policies].sort((a, b) => a.precedence - b.precedence).map((ref) => this.#policies.get(ref.id)).filter((x) => x !== undefined);
    for (const policy of policies) {
      if (!policy.include.some((r) => ruleMatches(r, who))) continue;
      if (policy.decision === 'bypass') return true;
      // Everyone else must log in first: an anonymous visitor meets the login page.
      if (policy.decision === 'allow') return who !== null;
      if (policy.decision === 'deny') return false;
    }
    return false;
  }
}

const IDP_ID = 'f174e90a-fafe-4643-bbbc-4a0ed4fc8415';
