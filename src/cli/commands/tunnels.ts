import { type Command, InvalidArgumentError } from 'commander';
import { isAppError } from '../../errors/catalogue.js';
import { operatorActor, toEventView } from '../../tunnels/tunnel-events.js';
import { parseTunnelRef } from '../../tunnels/tunnel-ref.js';
import type { OperatorTunnelView } from '../../tunnels/tunnel-service.js';
import { CliError, type CliContext, ExitCode, type GlobalOptions, operatorName, withBroker } from '../context.js';
import { isoSeconds, json, plural, relative, table } from '../output.js';

const DEFAULT_LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 10_000;

/** `tunnels list` and `tunnels end`: the same TunnelService the API uses, across every user. */
export function registerTunnelCommands(program: Command, context: CliContext): void {
  const tunnels = program.command('tunnels').description("list and end any user's tunnels");

  tunnels
    .command('list')
    .description('list tunnels that are not ended, newest first')
    .option('--user <id>', "only this user's tunnels")
    .option('--all', "include ended tunnels, and show each tunnel's event history")
    .option('--limit <n>', `at most this many tunnels (default ${DEFAULT_LIST_LIMIT})`, parseLimit, DEFAULT_LIST_LIMIT)
    .option('--json', 'print JSON')
    .action(async (options: { user?: string; all?: boolean; limit: number; json?: boolean }, command: Command) => {
      const { logLevel } = command.optsWithGlobals<GlobalOptions>();
      await withBroker(context, { logLevel, needsCloudflare: false }, async (app) => {
        const all = options.all === true;
        const { tunnels: views, total } = await app.tunnels.listForOperator({ ownerId: options.user, includeEnded: all, limit: options.limit, withEvents: all });
        context.stdout(options.json ? json({ total, tunnels: views.map((v) => tunnelJson(v, all)) }) : listText(views, total, all));
      });
    });

  tunnels
    .command('end')
    .description('end a tunnel now, upstream too (as DELETE /v1/tunnels/:id does), recorded as operator:<name>')
    .argument('<tunnel>', 'its id, its hostname, or its slug')
    .option('--as <name>', 'the operator name for the audit trail (default: your login name)')
    .option('--json', 'print JSON')
    .action(async (ref: string, options: { as?: string; json?: boolean }, command: Command) => {
      const { logLevel } = command.optsWithGlobals<GlobalOptions>();
      const actor = operatorActor(operatorName(options.as));
      await withBroker(context, { logLevel, needsCloudflare: true }, async (app, config) => {
        const target = operatorTarget(ref);
        const row = await app.tunnels.findForOperator(target);
        if (!row) {
          const named = 'id' in target ? `no tunnel with id ${target.id}` : 'slug' in target ? `no live tunnel with slug ${target.slug}` : `no live tunnel with hostname ${target.hostname}`;
          throw new CliError(named, ExitCode.notFound);
        }
        const result = { id: row.id, hostname: row.hostname, ownerId: row.ownerId };
        if (row.status === 'ended') {
          context.stdout(options.json ? json({ ...result, outcome: 'already_ended', endedAt: row.endedAt?.toISOString() ?? null }) : `${row.id} (${row.hostname}) had already ended at ${isoSeconds(row.endedAt)}\n`);
          return;
        }
        try {
          await app.tunnels.delete(row.ownerId, row.id, app.log.child({ tunnelId: row.id, actor }), actor);
        } catch (error) {
          if (isAppError(error) && (error.code === 'UPSTREAM_ERROR' || error.code === 'UPSTREAM_UNAVAILABLE')) {
            const operation = typeof error.details?.operation === 'string' ? error.details.operation : 'teardown';
            throw new CliError(
              `Cloudflare did not remove ${row.hostname} (${operation}: ${error.code}). The tunnel stays \`ending\`; the reaper retries. ` +
                '--log-level warn shows the upstream error.',
            );
          }
          throw error;
        }
        context.stdout(options.json ? json({ ...result, outcome: 'ended' }) : `ended ${row.id} (${row.hostname}, user ${row.ownerId})\n`);
      });
    });
}

/**
 * What `tunnels end` looks up: an id (any state), a hostname, or a slug (unique among live
 * tunnels across every Cloudflare account, whatever its domain). Any hostname, not only a
 * configured domain's: an operator may have to end tunnels made under an earlier domain.
 */
export function operatorTarget(ref: string): { id: string } | { hostname: string } | { slug: string } {
  const parsed = parseTunnelRef(ref);
  if (parsed === undefined) throw new CliError('name a tunnel by its id, hostname or slug', ExitCode.usage);
  return parsed;
}

function parseLimit(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIST_LIMIT) throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_LIST_LIMIT}`);
  return n;
}

function tunnelJson(view: OperatorTunnelView, withEvents: boolean) {
  const { tunnel } = view;
  return {
    id: tunnel.id,
    ownerId: tunnel.ownerId,
    hostname: tunnel.hostname,
    slug: tunnel.slug,
    port: tunnel.port,
    status: tunnel.status,
    endReason: tunnel.endReason,
    cfTunnelId: tunnel.cfTunnelId,
    dnsRecordId: tunnel.dnsRecordId,
    createdAt: tunnel.createdAt.toISOString(),
    endedAt: tunnel.endedAt?.toISOString() ?? null,
    expiresAt: view.expiresAt?.toISOString() ?? null,
    ...(withEvents ? { events: view.events.map(toEventView) } : {}),
  };
}

function listText(views: OperatorTunnelView[], total: number, all: boolean): string {
  if (views.length === 0) return all ? 'no tunnels\n' : 'no live tunnels (--all includes ended ones)\n';
  const now = Date.now();
  const headers = ['ID', 'USER', 'HOSTNAME', 'PORT', 'STATUS', 'CREATED', 'EXPIRES', ...(all ? ['ENDED', 'REASON'] : [])];
  const rows = views.map(({ tunnel, expiresAt }) => [
    tunnel.id,
    tunnel.ownerId,
    tunnel.hostname,
    String(tunnel.port),
    tunnel.status,
    isoSeconds(tunnel.createdAt),
    relative(expiresAt, now),
    ...(all ? [isoSeconds(tunnel.endedAt), tunnel.endReason ?? '-'] : []),
  ]);
  let text = table(headers, rows);
  if (all) {
    text += '\nHistory (oldest first):\n';
    for (const { tunnel, events } of views) {
      text += `\n${tunnel.id}  ${tunnel.hostname}\n`;
      const rows = events.map(toEventView).map((e) => [e.at, e.type, e.actor, Object.keys(e.details).length > 0 ? JSON.stringify(e.details) : '']);
      text += rows.length === 0 ? '  (no events)\n' : table(['AT', 'EVENT', 'ACTOR', 'DETAILS'], rows).replace(/^(?=.)/gm, '  ');
    }
  }
  text += views.length < total
    ? `\nshowing the newest ${views.length} of ${plural(total, 'tunnel')} (--limit shows more)\n`
    : `\n${plural(total, 'tunnel')}\n`;
  return text;
}
