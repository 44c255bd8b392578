import type { PrismaClient } from '../generated/prisma/client.js';
import type { CloudflareAccounts } from './cloudflare-accounts.js';

/** Live tunnels whose account the configuration does not name: the broker will not start. */
export class UncoveredAccountsError extends Error {
  constructor(readonly uncovered: Array<{ accountId: string | null; live: number; example: string }>) {
    super(
      'Live tunnels live in Cloudflare accounts the configuration no longer names, so nothing could end them: ' +
        uncovered.map((u) => u.accountId === null
          ? `${u.live} from before accounts were recorded (e.g. ${u.example}) that are not under the first account's tunnelDomain; list their account first`
          : `${u.live} in account ${u.accountId} (e.g. ${u.example})`).join('; ') +
        '. Put the account back in CLOUDFLARE_ACCOUNTS (with maxTunnels 1 it takes no new tunnels while they end), or end them first.',
    );
    this.name = 'UncoveredAccountsError';
  }
}

/**
 * Refuses to boot while live rows belong to an account that is not configured. Their
 * teardown needs that account's token: a broker without it would leave the tunnels, their
 * DNS records and Access objects behind, and keep failing to end them. Removing an account
 * is therefore: give it `maxTunnels: 1`-style drain (or wait), let its tunnels end, then
 * drop it. Rows with no account recorded (from before this check existed) are the primary
 * account's, which holds only if their hostnames are under its tunnel domain.
 */
export async function assertAccountsCoverLiveTunnels(prisma: PrismaClient, accounts: CloudflareAccounts): Promise<void> {
  const known = accounts.all.map((h) => h.account.accountId);
  const primaryDomain = accounts.primary.account.tunnelDomain;
  const uncovered = await prisma.$queryRaw<Array<{ accountId: string | null; live: number; example: string }>>`
    SELECT cf_account_id AS "accountId", count(*)::int AS live, min(hostname) AS example
    FROM tunnels
    WHERE status <> 'ended'
      AND (
        (cf_account_id IS NOT NULL AND NOT (cf_account_id = ANY(${known}::text[])))
        OR (cf_account_id IS NULL AND right(hostname, ${primaryDomain.length + 1}::int) <> ${`.${primaryDomain}`})
      )
    GROUP BY cf_account_id`;
  if (uncovered.length > 0) throw new UncoveredAccountsError(uncovered);
}
