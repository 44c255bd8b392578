import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
type LevelName = (typeof LEVELS)[number];

/**
 * Fastify's per-request logger, made only when the request first logs something its level
 * lets through. Building a pino child runs the redaction over its bindings (wildcard paths)
 * and rebuilds its level methods: most of a heartbeat's logging cost, for a child that a
 * successful heartbeat never writes to (route level `warn`). Bindings added before the child
 * exists (setBindings) are kept and given to it.
 */
export function lazyChildLoggerFactory(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new LazyChildLogger(logger, bindings, options) as unknown as FastifyBaseLogger;
}

class LazyChildLogger {
  readonly #parent: FastifyBaseLogger;
  #bindings: Bindings;
  readonly #options: ChildLoggerOptions;
  #child: FastifyBaseLogger | undefined;

  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent;
    this.#bindings = bindings;
    this.#options = options;
  }

  get level(): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level;
  }

  set level(level: string) {
    this.#real().level = level;
  }

  isLevelEnabled(level: string): boolean {
    const values = (this.#parent as unknown as { levels: { values: Record<string, number> } }).levels.values;
    const wanted = values[level];
    const current = values[this.level];
    return wanted !== undefined && current !== undefined && wanted >= current;
  }

  fatal(...args: unknown[]): void {
    this.#write('fatal', args);
  }

  error(...args: unknown[]): void {
    this.#write('error', args);
  }

  warn(...args: unknown[]): void {
    this.#write('warn', args);
  }

  info(...args: unknown[]): void {
    this.#write('info', args);
  }

  debug(...args: unknown[]): void {
    this.#write('debug', args);
  }

  trace(...args: unknown[]): void {
    this.#write('trace', args);
  }

  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#real().child(bindings, options);
  }

  bindings(): Bindings {
    return this.#child ? (this.#child as unknown as { bindings(): Bindings }).bindings() : { ...this.#bindings };
  }

  setBindings(bindings: Bindings): void {
    if (this.#child) (this.#child as unknown as { setBindings(b: Bindings): void }).setBindings(bindings);
    else this.#bindings = { ...this.#bindings, ...bindings };
  }

  #write(level: LevelName, args: unknown[]): void {
    if (!this.isLevelEnabled(level)) return;
    (this.#real()[level] as (...a: unknown[]) => void)(...args);
  }

  #real(): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options);
    return this.#child;
  }
}
