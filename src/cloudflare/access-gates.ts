import type { AccessConfig, CloudflareConfig } from '../config/env.js';
import { hasTeamRule } from '../config/env.js';
import { LogEvent } from '../logging/logger.js';
import type { TunnelCreation } from './tunnel-creation.js';
import { tunnelName } from './tunnel-lookups.js';
import type { RequestOptions, UpstreamCalls } from './upstream-calls.js';
import { UpstreamError } from './upstream-error.js';

/** Who may open a tunnel's URL. */
export type TunnelAccess = { mode: 'team' } | { mode: 'public' } | { mode: 'emails'; emails: string[] };

/** The Access objects of one tunnel: its own application, and its own reusable policy (`emails` only). */
export interface GateIds {
  appId?: string | undefined;
  policyId?: string | undefined;
}

/** What `prepare` made, and what is left to do alongside the DNS record. */
export interface PreparedGate extends GateIds {
  /** An `emails` application is created with no policy (nobody gets in) and given its allow-list by `finish`. */
  attachPolicy?: string | undefined;
}

/** An Access application or reusable policy as the reconciler sees it. */
export interface ListedAccess {
  id: string;
  name: string;
  /** Applications: the hostname (or wildcard) they cover. */
  domain: string | null;
  createdAt: string | null;
}

export interface TeamGateStatus {
  status: 'ok' | 'missing' | 'mismatch';
  message: string;
}

/** What the API returns for an application or policy, as far as the broker reads it. */
interface ListedAccessObject {
  id?: string;
  name?: string;
  domain?: string;
  decision?: string;
  include?: unknown;
  policies?: Array<{ id?: string }>;
  session_duration?: string;
}

/**
 * The layout (it fits Cloudflare's limits: 500 applications and 500 reusable policies per
 * account, 1000 tunnels):
 *
 * - With a team rule (ACCESS_TEAM_EMAIL_DOMAINS / ACCESS_TEAM_EMAILS), one wildcard
 *   application `*.<TUNNEL_DOMAIN>` named `<prefix>team` carries the reusable allow policy
 *   `<prefix>team`. It covers every tunnel hostname (one level below TUNNEL_DOMAIN), so a
 *   `team` tunnel needs no Access object of its own. Made once (per process, checked on the
 *   first create; `doctor` checks it too).
 * - A tunnel whose audience differs gets an application of its own for its very hostname,
 *   named `<prefix><row id>`, which Cloudflare enforces instead of the wildcard: Access
 *   applies the most specific application that covers a request
 *   (https://developers.cloudflare.com/cloudflare-one/access-controls/policies/app-paths/,
 *   "the more specific rule takes precedence"; a `*.` wildcard covers one subdomain level).
 *   - `public`: the shared reusable bypass policy `<prefix>public` (everyone, no login).
 *     Without a team rule nothing covers the hostname, so a public tunnel has no Access
 *     object at all: exactly the broker's behaviour before Access.
 *   - `emails`: its own reusable allow policy `<prefix><row id>` listing the addresses.
 *
 * Names are deterministic, so a create whose answer was lost is adopted by name on retry,
 * and the reconciler proves an object is the broker's by its name. Every call goes through
 * UpstreamCalls, so through the shared request budget.
 */
export class AccessGates {
  readonly #calls: UpstreamCalls;
  readonly #creation: TunnelCreation;
  readonly #cf: CloudflareConfig;
  readonly #access: AccessConfig;
  readonly #domain: string;
  #teamGate: Promise<void> | undefined;
  #publicPolicy: Promise<string> | undefined;

  constructor(calls: UpstreamCalls, creation: TunnelCreation, cf: CloudflareConfig, access: AccessConfig, tunnelDomain: string) {
    this.#calls = calls;
    this.#creation = creation;
    this.#cf = cf;
    this.#access = access;
    this.#domain = tunnelDomain;
  }

  get teamName(): string {
    return `${this.#cf.tunnelNamePrefix}team`;
  }

  get publicName(): string {
    return `${this.#cf.tunnelNamePrefix}public`;
  }

  get wildcardDomain(): string {
    return `*.${this.#domain}`;
  }

  /** Whether the tunnel needs an application of its own for this audience. */
  needsOwnApp(access: TunnelAccess): boolean {
    if (access.mode === 'emails') return true;
    return access.mode === 'public' && hasTeamRule(this.#access);
  }

  /** Whether anything upstream is needed for this audience (false: exactly the broker before Access). */
  needsUpstream(access: TunnelAccess): boolean {
    return access.mode === 'team' || this.needsOwnApp(access);
  }

  /**
   * Puts the gate for `access` over `hostname`, before its DNS record exists: the team gate
   * (made once), or the tunnel's own application. One round trip on the critical path: for
   * `emails` the application (with no policy: nobody gets in) and the allow policy are made
   * together, and `finish` attaches the policy alongside the DNS record.
   */
  async prepare(rowId: string, hostname: string, access: TunnelAccess, onMade: (ids: GateIds) => void): Promise<PreparedGate> {
    const budget = this.#calls.budgetOptions('fail');
    if (access.mode === 'team') {
      await this.ensureTeamGate(budget);
      return {};
    }
    if (!this.needsOwnApp(access)) return {};
    if (access.mode === 'public') {
      const policyId = await this.#ensurePublicPolicy(budget);
      const appId = await this.#createApp(rowId, hostname, [policyId], budget);
      onMade({ appId });
      return { appId };
    }
    const ids: GateIds = {};
    const [app, policy] = await Promise.allSettled([
      this.#createApp(rowId, hostname, [], budget).then((id) => {
        ids.appId = id;
        onMade({ ...ids });
        return id;
      }),
      this.#createEmailsPolicy(rowId, access.emails, budget).then((id) => {
        ids.policyId = id;
        onMade({ ...ids });
        return id;
      }),
    ]);
    if (app.status === 'rejected') throw app.reason;
    if (policy.status === 'rejected') throw policy.reason;
    return { appId: app.value, policyId: policy.value, attachPolicy: policy.value };
  }

  /** The rest of `prepare`, alongside the DNS record: an `emails` application gets its allow-list. */
  async finish(rowId: string, hostname: string, prepared: PreparedGate): Promise<void> {
    if (!prepared.attachPolicy || !prepared.appId) return;
    await this.#updateApp(prepared.appId, rowId, hostname, [prepared.attachPolicy], this.#calls.budgetOptions('fail'));
  }

  /**
   * Changes a live tunnel's audience in place (PATCH). The hostname is gated throughout:
   * a tunnel's own application is updated in place, or removed only where the team gate
   * (made first) or, without a team rule, nothing (public) is what should remain.
   * Returns the tunnel's Access objects afterwards.
   */
  async change(rowId: string, hostname: string, current: GateIds, to: TunnelAccess, onMade: (ids: GateIds) => void): Promise<GateIds> {
    const budget = this.#calls.budgetOptions('fail');
    if (!this.needsOwnApp(to)) {
      if (to.mode === 'team') await this.ensureTeamGate(budget);
      await this.remove(current, budget);
      return {};
    }
    let policyId: string;
    let ownPolicy: string | undefined;
    if (to.mode === 'emails') {
      ownPolicy = current.policyId
        ? await this.#updateEmailsPolicy(current.policyId, rowId, to.emails, budget)
        : await this.#createEmailsPolicy(rowId, to.emails, budget);
      onMade({ appId: current.appId, policyId: ownPolicy });
      policyId = ownPolicy;
    } else {
      policyId = await this.#ensurePublicPolicy(budget);
    }
    let appId = current.appId;
    if (appId) await this.#updateApp(appId, rowId, hostname, [policyId], budget);
    else {
      appId = await this.#createApp(rowId, hostname, [policyId], budget);
      onMade({ appId, policyId: ownPolicy ?? current.policyId });
    }
    // An allow-list no longer attached (emails -> public) goes, after the application stopped using it.
    if (current.policyId && !ownPolicy) await this.#deletePolicy(current.policyId, budget);
    return { appId, policyId: ownPolicy };
  }

  /** Removes a tunnel's own application, then its policy (a policy in use cannot be deleted). Idempotent. */
  async remove(ids: GateIds, budget: RequestOptions): Promise<void> {
    if (ids.appId) await this.deleteApp(ids.appId, budget);
    if (ids.policyId) await this.#deletePolicy(ids.policyId, budget);
  }

  deleteApp(appId: string, budget: RequestOptions): Promise<void> {
    return this.#calls.ignoreNotFound(this.#calls.call('access.app.delete', () =>
      this.#calls.client.zeroTrust.access.applications.delete(appId, { account_id: this.#cf.accountId }, budget)));
  }

  deletePolicy(policyId: string, budget: RequestOptions): Promise<void> {
    return this.#deletePolicy(policyId, budget);
  }

  /** A row's Access objects found by their names, for a teardown whose row never recorded them. */
  async findIds(rowId: string, budget: RequestOptions): Promise<GateIds> {
    const name = tunnelName(this.#cf, rowId);
    const [app, policy] = await Promise.all([this.#findApp(name, budget), this.#findPolicy(name, budget)]);
    return { appId: app?.id, policyId: policy?.id };
  }

  /**
   * The account's Access applications and reusable policies whose names start with the
   * broker's prefix, to the last page (the reconciler decides which are really its own).
   */
  async listUnderPrefix(options: { perPage: number }): Promise<{ apps: ListedAccess[]; policies: ListedAccess[] }> {
    const budget = this.#calls.budgetOptions('fail');
    const prefix = this.#cf.tunnelNamePrefix;
    const apps: ListedAccess[] = [];
    const policies: ListedAccess[] = [];
    const keep = (x: ListedAccessObject & { created_at?: string }, into: ListedAccess[]) => {
      if (x.id && x.name?.startsWith(prefix)) into.push({ id: x.id, name: x.name, domain: x.domain ?? null, createdAt: x.created_at ?? null });
    };
    await Promise.all([
      this.#calls.call('access.app.list', async () => {
        for await (const a of this.#calls.client.zeroTrust.access.applications.list({ account_id: this.#cf.accountId, per_page: options.perPage }, budget)) keep(a as ListedAccessObject, apps);
      }),
      this.#calls.call('access.policy.list', async () => {
        for await (const x of this.#calls.client.zeroTrust.access.policies.list({ account_id: this.#cf.accountId, per_page: options.perPage }, budget)) keep(x as ListedAccessObject, policies);
      }),
    ]);
    return { apps, policies };
  }

  // ---- the team gate ---------------------------------------------------------------

  /** Makes sure the wildcard team gate exists and matches the team rule; once per process unless it fails. */
  ensureTeamGate(budget: RequestOptions): Promise<void> {
    if (!hasTeamRule(this.#access)) {
      return Promise.reject(new UpstreamError('failed', 'access.team', undefined, [], undefined, { nothingCreated: true }));
    }
    this.#teamGate ??= this.#makeTeamGate(budget).catch((error: unknown) => {
      this.#teamGate = undefined;
      throw error;
    });
    return this.#teamGate;
  }

  /**
   * The reconciler saw no team gate over the domain (someone deleted it): forget that it was
   * made, and make it again. Without this a process would go on trusting its first check.
   */
  async restoreTeamGate(listedApps: ReadonlyArray<{ name: string; domain: string | null }>): Promise<boolean> {
    if (!hasTeamRule(this.#access)) return false;
    if (listedApps.some((a) => a.name === this.teamName && a.domain === this.wildcardDomain)) return false;
    this.#teamGate = undefined;
    await this.ensureTeamGate(this.#calls.budgetOptions('fail'));
    return true;
  }

  /** Whether the team gate exists and matches the configuration (read only; for doctor). */
  async teamGateStatus(budget: RequestOptions): Promise<TeamGateStatus> {
    const [policy, app] = await Promise.all([this.#findPolicy(this.teamName, budget), this.#findApp(this.teamName, budget)]);
    if (!policy || !app) return { status: 'missing', message: `no ${!app ? `application ${this.teamName} for ${this.wildcardDomain}` : `reusable policy ${this.teamName}`}` };
    if (!sameRules(policy.include, this.#teamRules()) || policy.decision !== 'allow') return { status: 'mismatch', message: `policy ${this.teamName} does not list the configured team` };
    if (app.domain !== this.wildcardDomain || !(app.policies ?? []).some((p) => p.id === policy.id)) {
      return { status: 'mismatch', message: `application ${this.teamName} does not cover ${this.wildcardDomain} with policy ${this.teamName}` };
    }
    return { status: 'ok', message: `${this.wildcardDomain} is gated by ${this.teamName}: ${this.describeTeam()}` };
  }

  describeTeam(): string {
    return [...this.#access.teamEmailDomains.map((d) => `@${d}`), ...this.#access.teamEmails].join(', ');
  }

  async #makeTeamGate(budget: RequestOptions): Promise<void> {
    const name = this.teamName;
    const include = this.#teamRules();
    const existingPolicy = await this.#findPolicy(name, budget);
    let policyId: string;
    if (!existingPolicy?.id) policyId = await this.#createPolicy(name, 'allow', include, budget);
    else {
      policyId = existingPolicy.id;
      if (!sameRules(existingPolicy.include, include) || existingPolicy.decision !== 'allow') await this.#putPolicy(policyId, name, 'allow', include, budget);
    }
    const app = await this.#findApp(name, budget);
    const matches = app?.domain === this.wildcardDomain && app.session_duration === this.#access.sessionDuration
      && (app.policies ?? []).length === 1 && app.policies?.[0]?.id === policyId;
    if (app?.id && matches) return;
    if (app?.id) await this.#putApp(app.id, name, this.wildcardDomain, [policyId], budget);
    else await this.#createAppNamed(name, this.wildcardDomain, [policyId], budget);
    this.#calls.log.info({ event: LogEvent.upstreamAdopted, operation: 'access.team', domain: this.wildcardDomain }, 'team gate in place');
  }

  #teamRules(): Array<Record<string, unknown>> {
    return [
      ...this.#access.teamEmailDomains.map((domain) => ({ email_domain: { domain } })),
      ...this.#access.teamEmails.map((email) => ({ email: { email } })),
    ];
  }

  #ensurePublicPolicy(budget: RequestOptions): Promise<string> {
    this.#publicPolicy ??= (async () => {
      const found = await this.#findPolicy(this.publicName, budget);
      if (found?.id && found.decision === 'bypass') return found.id;
      if (found?.id) {
        await this.#putPolicy(found.id, this.publicName, 'bypass', [{ everyone: {} }], budget);
        return found.id;
      }
      return this.#createPolicy(this.publicName, 'bypass', [{ everyone: {} }], budget);
    })().catch((error: unknown) => {
      this.#publicPolicy = undefined;
      throw error;
    });
    return this.#publicPolicy;
  }

  // ---- one tunnel's objects ----------------------------------------------------------

  #createApp(rowId: string, hostname: string, policyIds: string[], budget: RequestOptions): Promise<string> {
    return this.#createAppNamed(tunnelName(this.#cf, rowId), hostname, policyIds, budget);
  }

  #updateApp(appId: string, rowId: string, hostname: string, policyIds: string[], budget: RequestOptions): Promise<void> {
    return this.#putApp(appId, tunnelName(this.#cf, rowId), hostname, policyIds, budget);
  }

  #createEmailsPolicy(rowId: string, emails: string[], budget: RequestOptions): Promise<string> {
    return this.#createPolicy(tunnelName(this.#cf, rowId), 'allow', emailRules(emails), budget);
  }

  async #updateEmailsPolicy(policyId: string, rowId: string, emails: string[], budget: RequestOptions): Promise<string> {
    await this.#putPolicy(policyId, tunnelName(this.#cf, rowId), 'allow', emailRules(emails), budget);
    return policyId;
  }

  // ---- calls ---------------------------------------------------------------------

  /** Creates the application `name`, or adopts the one an earlier attempt made (looked up by its exact name before each retry). */
  #createAppNamed(name: string, domain: string, policyIds: string[], budget: RequestOptions): Promise<string> {
    let retry = false;
    return this.#creation.createWithRetries('access.app.create', async () => {
      if (retry) {
        const found = await this.#findApp(name, budget);
        if (found?.id) {
          this.#calls.log.info({ event: LogEvent.upstreamAdopted, operation: 'access.app.create', accessAppId: found.id }, 'adopted the Access application an earlier attempt created');
          if (!samePolicies(found, policyIds) || found.domain !== domain) await this.#putApp(found.id, name, domain, policyIds, budget);
          return found.id;
        }
      }
      retry = true;
      const app = await this.#calls.call('access.app.create', () =>
        this.#calls.client.zeroTrust.access.applications.create(
          { account_id: this.#cf.accountId, ...this.#appBody(name, domain, policyIds) } as never,
          { ...budget, maxRetries: 0 },
        ),
      ) as ListedAccessObject;
      if (!app.id) throw new UpstreamError('failed', 'access.app.create', undefined, [], undefined);
      return app.id;
    });
  }

  async #putApp(appId: string, name: string, domain: string, policyIds: string[], budget: RequestOptions): Promise<void> {
    await this.#calls.call('access.app.update', () =>
      this.#calls.client.zeroTrust.access.applications.update(appId, { account_id: this.#cf.accountId, ...this.#appBody(name, domain, policyIds) } as never, budget));
  }

  #appBody(name: string, domain: string, policyIds: string[]) {
    return {
      type: 'self_hosted',
      name,
      domain,
      session_duration: this.#access.sessionDuration,
      policies: policyIds.map((id, i) => ({ id, precedence: i + 1 })),
    };
  }

  #createPolicy(name: string, decision: 'allow' | 'bypass', include: Array<Record<string, unknown>>, budget: RequestOptions): Promise<string> {
    let retry = false;
    return this.#creation.createWithRetries('access.policy.create', async () => {
      if (retry) {
        const found = await this.#findPolicy(name, budget);
        if (found?.id) {
          this.#calls.log.info({ event: LogEvent.upstreamAdopted, operation: 'access.policy.create', accessPolicyId: found.id }, 'adopted the Access policy an earlier attempt created');
          if (!sameRules(found.include, include)) await this.#putPolicy(found.id, name, decision, include, budget);
          return found.id;
        }
      }
      retry = true;
      const policy = await this.#calls.call('access.policy.create', () =>
        this.#calls.client.zeroTrust.access.policies.create(
          { account_id: this.#cf.accountId, name, decision, include: include as never },
          { ...budget, maxRetries: 0 },
        ),
      );
      if (!policy.id) throw new UpstreamError('failed', 'access.policy.create', undefined, [], undefined);
      return policy.id;
    });
  }

  async #putPolicy(policyId: string, name: string, decision: 'allow' | 'bypass', include: Array<Record<string, unknown>>, budget: RequestOptions): Promise<void> {
    await this.#calls.call('access.policy.update', () =>
      this.#calls.client.zeroTrust.access.policies.update(policyId, { account_id: this.#cf.accountId, name, decision, include: include as never }, budget));
  }

  #deletePolicy(policyId: string, budget: RequestOptions): Promise<void> {
    return this.#calls.ignoreNotFound(this.#calls.call('access.policy.delete', () =>
      this.#calls.client.zeroTrust.access.policies.delete(policyId, { account_id: this.#cf.accountId }, budget)));
  }

  #findApp(name: string, budget: RequestOptions): Promise<ListedAccessObject | undefined> {
    return this.#calls.call('access.app.list', async () => {
      for await (const a of this.#calls.client.zeroTrust.access.applications.list({ account_id: this.#cf.accountId, name, exact: true }, budget)) {
        const app = a as ListedAccessObject;
        if (app.name === name && app.id) return app;
      }
      return undefined;
    });
  }

  /** Reusable policies cannot be filtered by name: the listing is walked (at most 500 per account). */
  #findPolicy(name: string, budget: RequestOptions): Promise<ListedAccessObject | undefined> {
    return this.#calls.call('access.policy.list', async () => {
      for await (const x of this.#calls.client.zeroTrust.access.policies.list({ account_id: this.#cf.accountId, per_page: 1000 }, budget)) {
        const policy = x as ListedAccessObject;
        if (policy.name === name && policy.id) return policy;
      }
      return undefined;
    });
  }
}

function emailRules(emails: string[]): Array<Record<string, unknown>> {
  return emails.map((email) => ({ email: { email } }));
}

function sameRules(actual: unknown, wanted: Array<Record<string, unknown>>): boolean {
  const key = (rules: unknown): string => JSON.stringify((Array.isArray(rules) ? rules : []).map((r) => JSON.stringify(r)).sort());
  return key(actual) === key(wanted);
}

function samePolicies(app: ListedAccessObject, policyIds: string[]): boolean {
  const ids = (app.policies ?? []).map((p) => p.id).filter(Boolean).sort();
  return JSON.stringify(ids) === JSON.stringify([...policyIds].sort());
}
