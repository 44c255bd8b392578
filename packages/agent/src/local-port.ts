import { connect } from 'node:net';

/**
 * Whether something accepts TCP connections on localhost:port. The broker's ingress rule is
 * `http://localhost:<port>` and "localhost" may resolve to either family, so either counts.
 */
export async function isLocalPortListening(port: number, timeoutMs = 1000): Promise<boolean> {
  const results = await Promise.all(['127.0.0.1', '::1'].map((host) => canConnect(host, port, timeoutMs)));
  return results.some(Boolean);
}

/** Whether host:port accepts a TCP connection within the time. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
