import { describe, expect, it } from 'vitest';
import { StatusLine } from '../../packages/agent/src/status-line.js';

function stream(options: { isTTY: boolean; columns?: number }) {
  const chunks: string[] = [];
  return { chunks, text: () => chunks.join(''), isTTY: options.isTTY, columns: options.columns, write: (t: string) => chunks.push(t) };
}

describe('StatusLine', () => {
  it('on a terminal, redraws one line in place and keeps log lines above it', () => {
    const out = stream({ isTTY: true, columns: 200 });
    const err = stream({ isTTY: true });
    let mono = 0;
    const status = new StatusLine(out, err, { color: false, now: () => 10_000, monotonic: () => mono });
    status.update({ state: 'online', url: 'https://a.example', lastHeartbeatAt: 7_000, reconnects: 2 });
    expect(out.chunks.at(-1)).toBe('\r\x1b[2K● online  ·  https://a.example  ·  heartbeat 0s ago  ·  reconnects 2');

    mono = 3_000;
    status.info('hello');
    // Cleared, the line printed, the status drawn again below it.
    expect(out.chunks.slice(-3)).toEqual(['\r\x1b[2K', 'hello\n', '\r\x1b[2K● online  ·  https://a.example  ·  heartbeat 3s ago  ·  reconnects 2']);
    status.warn('careful');
    expect(err.text()).toBe('careful\n');

    mono = 68_000;
    status.update({ state: 'reconnecting', detail: 'broker unreachable, retrying' });
    expect(out.chunks.at(-1)).toBe('\r\x1b[2K● reconnecting  ·  https://a.example  ·  heartbeat 1m 8s ago  ·  reconnects 2  ·  broker unreachable, retrying');
    status.stop();
    expect(out.chunks.at(-1)).toBe('\n');
    // No newline-free redraw is ever longer than the terminal (it would wrap and break \r).
    expect(out.chunks.every((c) => c.includes('\n') || c.length <= 2 + 6 + 200)).toBe(true);
  });

  it('measures "heartbeat … ago" on the monotonic clock, so a wall-clock step does not change it', () => {
    const out = stream({ isTTY: true, columns: 200 });
    let wall = Date.UTC(2030, 0, 1, 12, 0, 0);
    let mono = 5_000;
    const status = new StatusLine(out, stream({ isTTY: true }), { color: false, now: () => wall, monotonic: () => mono });
    status.update({ state: 'online', lastHeartbeatAt: wall, reconnects: 0 });
    // The laptop wakes: the wall clock steps an hour ahead while two seconds really pass.
    wall += 3_600_000;
    mono += 2_000;
    status.update({ state: 'reconnecting' });
    expect(out.chunks.at(-1)).toBe('\r\x1b[2K● reconnecting  ·  heartbeat 2s ago  ·  reconnects 0');
  });

  it('truncates to the terminal width', () => {
    const out = stream({ isTTY: true, columns: 30 });
    const status = new StatusLine(out, stream({ isTTY: true }), { color: false, now: () => 0 });
    status.update({ state: 'online', url: 'https://a-very-long-hostname.tunnels.example.com', reconnects: 0 });
    const drawn = out.chunks.at(-1)!.replace('\r\x1b[2K', '');
    expect([...drawn]).toHaveLength(29);
    expect(drawn.endsWith('…')).toBe(true);
  });

  it('elsewhere, prints a plain line per change of state and nothing for a mere heartbeat', () => {
    const out = stream({ isTTY: false });
    const status = new StatusLine(out, stream({ isTTY: false }), { now: () => Date.UTC(2030, 0, 1, 12, 0, 0) });
    status.update({ state: 'online', reconnects: 0 });
    status.update({ lastHeartbeatAt: Date.UTC(2030, 0, 1, 12, 0, 1) });
    status.update({ lastHeartbeatAt: Date.UTC(2030, 0, 1, 12, 0, 2) });
    status.update({ state: 'reconnecting', detail: 'broker unreachable, retrying' });
    expect(out.text()).toBe(
      '[12:00:00] status: online (reconnects 0)\n' +
        '[12:00:00] status: reconnecting (reconnects 0, last heartbeat 12:00:02, broker unreachable, retrying)\n',
    );
    expect(out.text()).not.toContain('\r');
  });
});
