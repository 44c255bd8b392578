import type { CloudflareSdk } from './cloudflare-sdk.js';
import type { CloudflareConfig } from '../config/env.js';
import { DOMAIN_PLACEMENT_CHECKS, domainPlacementChecks } from './domain-placement.js';
import { translateUpstreamError, type UpstreamError } from './upstream-error.js';

/** One line of `tunnel-broker doctor`. */
export interface CheckResult {
  name: string;
  status: 'ok' | 'fail' | 'warn' | 'skipped';
  message: string;
  /** What to do about it, when it is not ok. */
  fix?: string;
}

const TOKEN_PERMISSIONS = 'Account › Cloudflare Tunnel › Edit (for CLOUDFLARE_ACCOUNT_ID) and Zone › DNS › Edit (for CLOUDFLARE_ZONE_ID)';

/**
 * Read-only checks that the configured token works and reaches what the broker needs: the
 * token itself, the account's tunnels, the zone (and that it holds TUNNEL_DOMAIN), and the
 * zone's DNS records. Nothing is created, so edit permission is only implied by the token's
 * reach; the first create proves it. Stops after a token Cloudflare refuses, since every
 * other request would be refused the same way. The zone's name also tells where TUNNEL_DOMAIN
 * sits in it (see domainPlacementChecks).
 */
export async function checkCloudflareAccess(client: CloudflareSdk, config: CloudflareConfig, tunnelDomain: string): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const token = await checkToken(client, config);
  results.push(token);
  if (token.status === 'fail') {
    for (const name of ['cloudflare tunnels', 'cloudflare zone', ...DOMAIN_PLACEMENT_CHECKS, 'cloudflare dns']) {
      results.push({ name, status: 'skipped', message: 'skipped: the token check failed' });
    }
    return results;
  }

  results.push(await attempt('cloudflare tunnels', 'tunnel.list', async () => {
    await client.zeroTrust.tunnels.cloudflared.list({ account_id: config.accountId, is_deleted: false, per_page: 1 });
    return { status: 'ok', message: `can list the tunnels of account ${config.accountId}` };
  }, (error) => ({
    message: `cannot list the tunnels of account ${config.accountId}: ${describe(error)}`,
    fix: error.kind === 'unauthorized' || error.status === 400
      ? `check CLOUDFLARE_ACCOUNT_ID, and give the token Account › Cloudflare Tunnel › Edit on that account`
      : unreachableFix(config),
  })));

  let zoneHoldingDomain: string | undefined;
  results.push(await attempt('cloudflare zone', 'zone.get', async () => {
    const zone = await client.zones.get({ zone_id: config.zoneId });
    const name = zone.name.toLowerCase();
    const domain = tunnelDomain.toLowerCase();
    if (domain !== name && !domain.endsWith(`.${name}`)) {
      return {
        status: 'fail',
        message: `TUNNEL_DOMAIN ${domain} is not inside zone ${name} (CLOUDFLARE_ZONE_ID ${config.zoneId})`,
        fix: 'set CLOUDFLARE_ZONE_ID to the zone that holds TUNNEL_DOMAIN, or TUNNEL_DOMAIN to a name inside this zone',
      };
    }
    zoneHoldingDomain = name;
    return { status: 'ok', message: `zone ${name} holds TUNNEL_DOMAIN ${domain}` };
  }, (error) => (error.kind === 'unauthorized'
    // Reading zone details needs Zone › Zone › Read, which a DNS-only token may lack; the broker itself never reads the zone.
    ? { status: 'warn', message: `cannot read zone ${config.zoneId} (${describe(error)}), so TUNNEL_DOMAIN was not checked against it`, fix: 'optional: grant the token Zone › Zone › Read for this check' }
    : { message: `cannot read zone ${config.zoneId}: ${describe(error)}`, fix: error.status === 400 || error.kind === 'not_found' ? 'check CLOUDFLARE_ZONE_ID' : unreachableFix(config) })));
  results.push(...(zoneHoldingDomain === undefined
    ? DOMAIN_PLACEMENT_CHECKS.map((name): CheckResult => ({ name, status: 'skipped', message: 'skipped: TUNNEL_DOMAIN was not found in a readable zone' }))
    : domainPlacementChecks(zoneHoldingDomain, tunnelDomain)));

  results.push(await attempt('cloudflare dns', 'dns.list', async () => {
    await client.dns.records.list({ zone_id: config.zoneId, per_page: 1, name: { endswith: `.${tunnelDomain}` } });
    return { status: 'ok', message: `can list the DNS records under ${tunnelDomain}` };
  }, (error) => ({
    message: `cannot list the DNS records of zone ${config.zoneId}: ${describe(error)}`,
    fix: error.kind === 'unauthorized' || error.status === 400
      ? 'check CLOUDFLARE_ZONE_ID, and give the token Zone › DNS › Edit on that zone'
      : unreachableFix(config),
  })));
  return results;
}

async function checkToken(client: CloudflareSdk, config: CloudflareConfig): Promise<CheckResult> {
  const name = 'cloudflare token';
  let verified: { status: string };
  try {
    verified = await client.user.tokens.verify();
  } catch (userError) {
    const error = translateUpstreamError('user.tokens.verify', userError);
    if (error.kind !== 'unauthorized') {
      return { name, status: 'fail', message: `cannot verify CLOUDFLARE_API_TOKEN: ${describe(error)}`, fix: unreachableFix(config) };
    }
    // Account-owned tokens are verified under their account, not /user.
    try {
      verified = await client.accounts.tokens.verify({ account_id: config.accountId });
    } catch {
      return {
        name,
        status: 'fail',
        message: `Cloudflare refused CLOUDFLARE_API_TOKEN (${describe(error)})`,
        fix: `create an API token with ${TOKEN_PERMISSIONS}, and set CLOUDFLARE_API_TOKEN to it`,
      };
    }
  }
  if (verified.status !== 'active') {
    return { name, status: 'fail', message: `CLOUDFLARE_API_TOKEN is ${verified.status}`, fix: `create a new API token with ${TOKEN_PERMISSIONS}` };
  }
  return { name, status: 'ok', message: 'CLOUDFLARE_API_TOKEN is valid and active' };
}

async function attempt(
  name: string,
  operation: string,
  run: () => Promise<Omit<CheckResult, 'name'>>,
  onError: (error: UpstreamError) => Omit<CheckResult, 'name' | 'status'> & { status?: CheckResult['status'] },
): Promise<CheckResult> {
  try {
    return { name, ...(await run()) };
  } catch (cause) {
    const { status = 'fail', ...rest } = onError(translateUpstreamError(operation, cause));
    return { name, status, ...rest };
  }
}

function describe(error: UpstreamError): string {
  if (error.status === undefined) return error.kind === 'unavailable' ? 'no answer (unreachable or timed out)' : error.kind;
  return `HTTP ${error.status}${error.cloudflareCodes.length > 0 ? `, code ${error.cloudflareCodes.join(',')}` : ''}`;
}

function unreachableFix(config: CloudflareConfig): string {
  return `check that ${config.baseUrl ?? 'api.cloudflare.com'} is reachable from here (CLOUDFLARE_BASE_URL, proxies, firewall)`;
}
