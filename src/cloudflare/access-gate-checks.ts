import type { CloudflareSdk } from './cloudflare-sdk.js';
import type { AccessConfig, CloudflareConfig } from '../config/env.js';
import type { Logger } from '../logging/logger.js';
import type { CheckResult } from './access-check.js';
import { TunnelProvider } from './tunnel-provider.js';
import { translateUpstreamError } from './upstream-error.js';

const ACCESS_PERMISSION = 'Account › Access: Apps and Policies › Edit (and Access: Organizations, Identity Providers, and Groups › Read for the identity provider check)';

/**
 * `doctor`'s Cloudflare Access lines, when a team rule is configured: the token may manage
 * Access applications and policies; the wildcard team gate exists and matches the team rule
 * (with `createTeamGate`, it is made or corrected, the one write doctor can be asked for);
 * and which identity providers visitors can log in with.
 */
export async function checkAccessGates(
  client: CloudflareSdk,
  cf: CloudflareConfig,
  access: AccessConfig,
  tunnelDomain: string,
  logger: Logger,
  options: { createTeamGate?: boolean } = {},
): Promise<CheckResult[]> {
  const provider = new TunnelProvider(client, cf, logger, { access: { config: access, tunnelDomain } });
  const gates = provider.access;
  const results: CheckResult[] = [];
  try {
    await client.zeroTrust.access.applications.list({ account_id: cf.accountId, per_page: 1 } as never);
    await client.zeroTrust.access.policies.list({ account_id: cf.accountId, per_page: 1 });
    results.push({ name: 'cloudflare access', status: 'ok', message: `can list the Access applications and policies of account ${cf.accountId}` });
  } catch (cause) {
    const error = translateUpstreamError('access.app.list', cause);
    results.push({
      name: 'cloudflare access',
      status: 'fail',
      message: `cannot list Access applications: ${error.kind}${error.status ? ` (HTTP ${error.status})` : ''}; team and emails tunnels cannot be gated`,
      fix: `give the token ${ACCESS_PERMISSION}`,
    });
    results.push({ name: 'access team gate', status: 'skipped', message: 'skipped: the token cannot read Access' });
    results.push({ name: 'access identity providers', status: 'skipped', message: 'skipped: the token cannot read Access' });
    return results;
  }

  try {
    if (options.createTeamGate) await gates.ensureTeamGate({});
    const status = await gates.teamGateStatus({});
    results.push(status.status === 'ok'
      ? { name: 'access team gate', status: 'ok', message: status.message }
      : {
          name: 'access team gate',
          status: 'warn',
          message: `${status.message}; the broker makes it on the first team tunnel`,
          fix: 'run `tunnel-broker doctor --create-team-gate` to make it (or correct it) now',
        });
  } catch (cause) {
    const error = translateUpstreamError('access.team', cause);
    results.push({ name: 'access team gate', status: 'fail', message: `could not ${options.createTeamGate ? 'make' : 'check'} the team gate: ${error.kind}`, fix: `give the token ${ACCESS_PERMISSION}` });
  }

  try {
    const names: string[] = [];
    for await (const idp of client.zeroTrust.identityProviders.list({ account_id: cf.accountId })) {
      const { name, type } = idp as { name?: string; type?: string };
      names.push(type ? `${name ?? '?'} (${type})` : (name ?? '?'));
    }
    results.push(names.length > 0
      ? { name: 'access identity providers', status: 'ok', message: `visitors log in with: ${names.join(', ')}` }
      : { name: 'access identity providers', status: 'warn', message: 'no identity provider: nobody can log in to a gated tunnel', fix: 'add One-time PIN or your team\'s identity provider in Zero Trust › Settings › Authentication' });
  } catch (cause) {
    const error = translateUpstreamError('access.identity_providers.list', cause);
    results.push({ name: 'access identity providers', status: 'warn', message: `cannot list identity providers: ${error.kind}`, fix: `give the token ${ACCESS_PERMISSION}` });
  }
  return results;
}
