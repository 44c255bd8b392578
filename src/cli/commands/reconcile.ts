import type { Command } from 'commander';
import type { ReconcileEntry, ReconcileReport } from '../../reconcile/reconcile-report.js';
import { CliError, type CliContext, type GlobalOptions, withBroker } from '../context.js';
import { json, plural, table } from '../output.js';

/** `reconcile [--dry-run]`: one pass of the Reconciler the reaper runs, now, with its report. */
export function registerReconcileCommand(program: Command, context: CliContext): void {
  program
    .command('reconcile')
    .description('remove what the broker left behind in Cloudflare (tunnels and DNS records no live tunnel references, older than RECONCILE_GRACE_SECONDS)')
    .option('--dry-run', 'report what would be removed; remove nothing')
    .option('--show-kept', 'also list what was kept, and why')
    .option('--json', 'print the full report as JSON')
    .action(async (options: { dryRun?: boolean; showKept?: boolean; json?: boolean }, command: Command) => {
      const { logLevel } = command.optsWithGlobals<GlobalOptions>();
      await withBroker(context, { logLevel, needsCloudflare: true }, async (app) => {
        // buildApp made it because the CLI runs the broker as role `all`.
        const report = await app.reconciler!.reconcile({ dryRun: options.dryRun === true });
        context.stdout(options.json ? json(report) : reportText(report, options.showKept === true));
        if (report.status === 'locked') throw new CliError('another broker is reconciling right now; nothing was done. Try again in a minute.');
        if (report.status === 'interrupted') throw new CliError(`the pass stopped early (${report.interruptedBy}); the next pass continues`);
        if (report.failed.length > 0) throw new CliError(`${plural(report.failed.length, 'removal')} failed; the next pass retries`);
      });
    });
}

function reportText(report: ReconcileReport, showKept: boolean): string {
  if (report.status === 'locked') return '';
  const entryRow = (e: ReconcileEntry & { reason: string }) => [e.resource, e.id, e.name, e.reason, e.rowId ?? '-'];
  const headers = ['RESOURCE', 'ID', 'NAME', 'REASON', 'ROW'];
  let text = `${report.dryRun ? 'dry run: ' : ''}listed ${plural(report.listed.tunnels, 'tunnel')} and ${plural(report.listed.dnsRecords, 'DNS record')} ` +
    `(grace ${report.graceSeconds} s) in ${report.durationMs} ms\n`;
  const verb = report.dryRun ? 'would remove' : 'removed';
  text += report.removed.length === 0 ? `\nnothing to remove\n` : `\n${verb} ${report.removed.length}:\n${table(headers, report.removed.map(entryRow))}`;
  if (report.failed.length > 0) {
    text += `\nfailed ${report.failed.length}:\n${table([...headers, 'ERROR'], report.failed.map((e) => [...entryRow(e), e.error]))}`;
  }
  if (report.skipped.length > 0) {
    const byReason = new Map<string, number>();
    for (const e of report.skipped) byReason.set(e.reason, (byReason.get(e.reason) ?? 0) + 1);
    text += `\nkept ${report.skipped.length}: ${[...byReason].map(([reason, n]) => `${n} ${reason}`).join(', ')}\n`;
    if (showKept) text += table(headers, report.skipped.map(entryRow));
  }
  return text;
}
