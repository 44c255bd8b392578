import { randomUUID } from 'node:crypto';
import type { RedisClient as Redis } from '../redis/redis-client.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { RELEASE_LOCK, RENEW_LOCK } from '../redis/lua-snippets.js';

/** The pass lock's key, under the client's key prefix. */
export const RECONCILE_LOCK_KEY = 'reconcile:lock';

interface ReconcileLockCommands {
  tbReconcileRelease(lock: string, token: string): Promise<number>;
  tbReconcileRenew(lock: string, token: string, leaseMs: number): Promise<number>;
}

/** A lock this process holds until release(). */
export interface HeldLock {
  /** Set once the lease could not be renewed: another instance may hold the lock now. */
  readonly lost: boolean;
  /** Stops renewing and deletes the lock if it is still ours. Never rejects. */
  release(): Promise<void>;
}

export interface ReconcileLockOptions {
  redis: Redis;
  logger: Logger;
  /** How long the lock lives without renewal; it is renewed every third of this while held. */
  leaseMs: number;
  /** The lock's key (one per Cloudflare account); RECONCILE_LOCK_KEY by default. */
  key?: string;
}

/**
 * One reconcile pass at a time across every instance: SET NX PX with a random token,
 * renewed while held, released by compare-and-delete, so an instance whose lease ran out
 * never releases (or extends) the lock of the one that took over.
 */
export class ReconcileLock {
  readonly #redis: Redis & ReconcileLockCommands;
  readonly #log: Logger;
  readonly #leaseMs: number;
  readonly #key: string;

  constructor(options: ReconcileLockOptions) {
    this.#key = options.key ?? RECONCILE_LOCK_KEY;
    const commands = options.redis as Redis & Partial<ReconcileLockCommands>;
    if (!commands.tbReconcileRelease) {
      options.redis.defineCommand('tbReconcileRelease', { numberOfKeys: 1, lua: RELEASE_LOCK });
      options.redis.defineCommand('tbReconcileRenew', { numberOfKeys: 1, lua: RENEW_LOCK });
    }
    this.#redis = options.redis as Redis & ReconcileLockCommands;
    this.#log = options.logger;
    this.#leaseMs = options.leaseMs;
  }

  /** The lock, or undefined when another holder has it. Rejects if Redis does. */
  async acquire(): Promise<HeldLock | undefined> {
    const token = randomUUID();
    const acquired = await this.#redis.set(this.#key, token, 'PX', this.#leaseMs, 'NX');
    if (acquired !== 'OK') return undefined;
    let lost = false;
    let renewing: Promise<void> | undefined;
    const timer = setInterval(() => {
      renewing ??= this.#redis.tbReconcileRenew(this.#key, token, this.#leaseMs)
        .then((renewed) => {
          if (renewed !== 1) lost = true;
        })
        .catch((error: unknown) => {
          // Unsure whether the lease still holds: stop deleting rather than risk two reconcilers.
          lost = true;
          this.#log.warn({ err: error, event: LogEvent.reconcileFailed }, 'could not renew the reconcile lock');
        })
        .finally(() => {
          renewing = undefined;
        });
    }, Math.max(1, Math.floor(this.#leaseMs / 3)));
    return {
      get lost() {
        return lost;
      },
      release: async () => {
        clearInterval(timer);
        await renewing;
        // If this fails the lease simply runs out; the pass itself is done either way.
        await this.#redis.tbReconcileRelease(this.#key, token).catch((error: unknown) => {
          this.#log.warn({ err: error }, 'could not release the reconcile lock');
        });
      },
    };
  }
}
