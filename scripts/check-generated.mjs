// `npm run check:generated` (CI runs it): what is generated from the broker and checked in must
// be what the broker's code generates now, and the OpenAPI document must pass Redocly's lint.
// Regenerates (`npm run generate:agent`), then fails if git sees any change in those files.
import { spawnSync } from 'node:child_process';

const GENERATED = ['packages/agent/openapi.json', 'packages/agent/src/generated'];

function run(command, args) {
  const result = spawnSync(command, args, { stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.status !== 0) {
    process.stderr.write(`check:generated: \`${command} ${args.join(' ')}\` failed\n`);
    process.exit(result.status ?? 1);
  }
}

run('npm', ['run', '--silent', 'generate:agent']);
// Untracked files count too: a new generated file that was never added is a difference.
const status = spawnSync('git', ['status', '--porcelain', '--', ...GENERATED], { encoding: 'utf8' });
if (status.status !== 0) {
  process.stderr.write(status.stderr);
  process.exit(1);
}
if (status.stdout.trim() !== '') {
  spawnSync('git', ['--no-pager', 'diff', '--stat', '--', ...GENERATED], { stdio: 'inherit' });
  process.stderr.write(
    `check:generated: these generated files differ from what the broker's code generates now:\n${status.stdout}` +
      'Run `npm run generate:agent` and commit the result (and make the agent typecheck against it).\n',
  );
  process.exit(1);
}
run('npm', ['run', '--silent', 'lint:openapi']);
process.stdout.write('check:generated: the generated files are up to date and the OpenAPI document lints clean\n');
