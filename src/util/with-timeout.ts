/** A probe that took longer than its bound; the underlying operation may still be running. */
export class TimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * Settles with `promise`, or rejects with TimeoutError after `timeoutMs`. It cannot cancel
 * the operation (neither ioredis nor Prisma take a signal); it only stops the caller from
 * waiting on a dependency that hangs. The timer is unref'd and cleared, so it never holds
 * the process open.
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(timeoutMs)), timeoutMs);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
