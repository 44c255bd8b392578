import type { FastifyBaseLogger } from 'fastify';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyChildLoggerFactory } from '../../src/logging/lazy-child-logger.js';
import { loggerOptions, REDACTED } from '../../src/logging/logger.js';
import { LogCapture } from '../helpers/broker.js';

/** The broker's real logger options (level, redaction), writing to a capture; counts the children made from it. */
function parentLogger(level: 'info' | 'debug' = 'info') {
  const logs = new LogCapture();
  const logger = pino(loggerOptions({ log: { level, pretty: false } }), logs);
  let children = 0;
  // A facade over the real logger that counts the children made from it (the children
  // themselves inherit from the real logger, so their own children are pino's).
  const facade = Object.create(logger) as typeof logger;
  facade.child = ((...args: Parameters<typeof logger.child>) => {
    children += 1;
    return logger.child(...args);
  }) as typeof logger.child;
  return { logger: facade as unknown as FastifyBaseLogger, logs, children: () => children };
}

describe('lazyChildLoggerFactory', () => {
  it('makes no pino child for a request that logs nothing its level lets through', () => {
    const parent = parentLogger();
    const log = lazyChildLoggerFactory(parent.logger, { reqId: 'req-1' }, { level: 'warn' });
    (log as unknown as { setBindings(b: object): void }).setBindings({ userId: 'alice' });
    log.info('not at warn');
    log.debug('nor this');
    expect(parent.children()).toBe(0);
    expect(parent.logs.lines).toEqual([]);
    const levels = log as unknown as { isLevelEnabled(level: string): boolean };
    expect(levels.isLevelEnabled('info')).toBe(false);
    expect(levels.isLevelEnabled('error')).toBe(true);
  });

  it('on the first line it lets through, makes the child with every binding, set before or after, and still redacts', () => {
    const parent = parentLogger();
    const log = lazyChildLoggerFactory(parent.logger, { reqId: 'req-2' }, {});
    (log as unknown as { setBindings(b: object): void }).setBindings({ userId: 'bob' });
    log.warn({ headers: { authorization: 'Bearer secret-token' } }, 'first');
    (log as unknown as { setBindings(b: object): void }).setBindings({ tunnelId: 't-1' });
    log.info('second');
    expect(parent.children()).toBe(1);
    expect(parent.logs.lines).toEqual([
      expect.objectContaining({ reqId: 'req-2', userId: 'bob', msg: 'first', headers: { authorization: REDACTED } }),
      expect.objectContaining({ reqId: 'req-2', userId: 'bob', tunnelId: 't-1', msg: 'second' }),
    ]);
    expect(parent.logs.raw).not.toContain('secret-token');
  });

  it('gives a child of its own that carries the request bindings', () => {
    const parent = parentLogger('debug');
    const log = lazyChildLoggerFactory(parent.logger, { reqId: 'req-3' }, {});
    log.child({ tunnelId: 't-2' }).debug('from the grandchild');
    expect(parent.logs.lines).toEqual([expect.objectContaining({ reqId: 'req-3', tunnelId: 't-2', msg: 'from the grandchild' })]);
    expect(log.level).toBe('debug');
  });
});
