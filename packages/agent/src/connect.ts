import { randomUUID } from 'node:crypto';
import { backoffDelay, retryAfterDelay, sleep, Waker } from './backoff.js';
import { BrokerClient, BrokerError, type CreatedTunnel, DELETE_TIMEOUT_MS, describeAccess, type TunnelAccess } from './broker-client.js';
import { type MonotonicClock, monotonicNow } from './clock.js';
import { CloudflaredSupervisor, describeExit, type ExitInfo, type RestartPolicy } from './cloudflared.js';
import { type Env, type ResolvedConnection } from './config.js';
import { HeartbeatSchedule } from './heartbeat-schedule.js';
import { type InspectorOptions, type RunningInspector, startInspector } from './inspector/inspector.js';
import { isLocalPortListening } from './local-port.js';
import { createFailureMessage, describeDuration, unauthorizedMessage } from './messages.js';
import { type AgentState, StatusLine } from './status-line.js';

export interface ConnectSettings {
  port: number;
  slug?: string | undefined;
  /** Who may open the URL; the broker's default when absent. */
  access?: TunnelAccess | undefined;
  verbose: boolean;
  connection: ResolvedConnection;
  cloudflaredPath: string;
  /** The environment cloudflared inherits (minus the broker token, plus TUNNEL_TOKEN). */
  env: Env;
  restartPolicy?: Partial<RestartPolicy>;
  /** For every elapsed time and schedule; the monotonic clock unless a test injects one. */
  now?: MonotonicClock;
  /** The recording proxy and inspector (`--inspect-*`); false for `--no-inspect` (the tunnel goes straight to the port). */
  inspect?: Omit<InspectorOptions, 'appPort'> | false;
}

/** A reason to stop that the user must read; `exitCode` is what the process exits with. */
export class AgentFatal extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'AgentFatal';
    this.exitCode = exitCode;
  }
}

/** The first create gives up fast (a typo in --server should not hang); recreating after a sleep is patient. */
const INITIAL_CREATE_ATTEMPTS = 4;
const INITIAL_CREATE_MAX_WAIT_MS = 5_000;
/** How long a recreate keeps trying before it gives up (the laptop's network may take a while to come back). */
const RECREATE_BUDGET_MS = 30 * 60_000;
/** How long a recreate waits for our own old tunnel (still `ending`) to release its slug or quota. */
const OLD_TUNNEL_RELEASE_MS = 60_000;
/**
 * How long the agent keeps waiting for a create the broker is still running (409
 * IDEMPOTENCY_KEY_IN_USE, as when the agent's own request timed out first). The broker's
 * create is bounded by its create lease (renewed while it runs; the Idempotency-Key claim
 * expires with it if that broker dies) plus its Cloudflare request timeouts: well under this.
 * Giving up sooner leaves the tunnel the broker then finishes holding its slug and a quota
 * slot until it is reaped.
 */
const CREATE_IN_PROGRESS_MAX_WAIT_MS = 5 * 60_000;
/** Polls of a create in progress back off from Retry-After to this, so a long wait stays under the user's create rate limit. */
const CREATE_IN_PROGRESS_MAX_POLL_MS = 5_000;
const CREATE_IN_PROGRESS_DETAIL = 'create still in progress on the broker; waiting…';
/** Giving up on a create the broker may still finish: replay its key at most this often, within this long, to find the tunnel and end it. */
const ABANDON_REPLAY_ATTEMPTS = 6;
const ABANDON_REPLAY_WINDOW_MS = 10_000;
/**
 * The shutdown's DELETEs, all attempts together: one full DELETE_TIMEOUT_MS (the broker may
 * queue the teardown for its Cloudflare request budget) and a quick retry. A second Ctrl-C
 * cuts it short.
 */
const SHUTDOWN_DELETE_BUDGET_MS = DELETE_TIMEOUT_MS + 5_000;
const DELETE_ATTEMPTS = 3;

/**
 * One `connect`: create the tunnel, run cloudflared, heartbeat, recover, and end the tunnel
 * on the way out. States (shown on the status line):
 *
 *   starting -> online <-> reconnecting            (heartbeats failing transiently, retried with backoff)
 *                 |  <-> restarting cloudflared     (cloudflared exited; restarted with backoff)
 *                 |  <-> recreating                 (the broker says the tunnel is gone: a new one, same slug if asked)
 *                 v
 *              stopping -> stopped                  (signal: exit 0; cloudflared crash loop, 401, lost slug: exit 1)
 *
 * Every way out goes through `stopping`: heartbeats stop, cloudflared is stopped (SIGTERM,
 * then SIGKILL), and the tunnel is DELETEd. A tunnel is never left heartbeating with
 * nothing behind it.
 */
export class ConnectSession {
  readonly #settings: ConnectSettings;
  readonly #client: BrokerClient;
  readonly #status: StatusLine;
  readonly #stop = new AbortController();
  readonly #waker = new Waker();
  readonly #supervisor: CloudflaredSupervisor;
  #tunnel: CreatedTunnel | undefined;
  #outcome: { code: number; message?: string; stoppedBy?: string } | undefined;
  #resolveDone!: () => void;
  readonly #done = new Promise<void>((r) => (this.#resolveDone = r));
  #reconnects = 0;
  #heartbeatFailing: string | undefined;
  #recreating = false;
  #localListening: boolean | undefined;
  /** Tunnel ids whose heartbeat token the broker refused: heartbeat those with the access token. */
  #heartbeatTokenRefused = new Set<string>();
  #forced = false;
  readonly #force = new AbortController();
  readonly #now: MonotonicClock;
  #inspector: RunningInspector | undefined;

  constructor(settings: ConnectSettings, status: StatusLine) {
    this.#settings = settings;
    this.#status = status;
    this.#now = settings.now ?? monotonicNow;
    this.#client = new BrokerClient({ baseUrl: settings.connection.server, accessToken: settings.connection.token, timeoutMs: settings.connection.requestTimeoutMs });
    this.#supervisor = new CloudflaredSupervisor({
      path: settings.cloudflaredPath,
      env: settings.env,
      now: this.#now,
      ...(settings.restartPolicy ? { policy: settings.restartPolicy } : {}),
      events: {
        onStart: (pid, run) => {
          if (settings.verbose) this.#status.info(`cloudflared started (pid ${pid}${run > 1 ? `, run ${run}` : ''})`);
          this.#refresh();
        },
        onOutput: (line) => {
          if (settings.verbose) this.#status.warn(`cloudflared │ ${line}`);
        },
        onConnections: (connections) => this.#status.update({ connections }),
        onCrash: (info, restartInMs, crashes) => this.#onCrash(info, restartInMs, crashes),
        onGiveUp: (info, crashes) => this.#onGiveUp(info, crashes),
      },
    });
  }

  /** Ctrl-C, SIGTERM, SIGHUP: a clean stop that ends the tunnel. */
  requestStop(reason: string): void {
    this.#finish({ code: 0, stoppedBy: reason });
  }

  /** A second Ctrl-C: stop now, leave the tunnel to the broker's reaper. */
  forceStop(): void {
    this.#forced = true;
    this.#force.abort();
    this.#finish({ code: 130, stoppedBy: 'a second signal' });
    const pid = this.#supervisor.pid;
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  async run(): Promise<number> {
    const settings = this.#settings;
    for (const warning of settings.connection.warnings) this.#status.warn(`warning: ${warning}`);

    this.#localListening = await isLocalPortListening(settings.port);
    if (!this.#localListening) {
      this.#status.warn(
        `warning: Nothing is listening on localhost:${settings.port} yet. The tunnel is created anyway; ` +
          'visitors get an error page until your app starts on that port.',
      );
    }
    // Methods, not the field: TypeScript would keep the field narrowed across the awaits.
    if (this.#stopping()) return this.#exitCode();
    if (settings.inspect !== false) {
      try {
        this.#inspector = await startInspector({ ...settings.inspect, appPort: settings.port });
      } catch (error) {
        this.#status.warn(`error: could not start the inspector: ${(error as Error).message} (--no-inspect runs without it)`);
        return 1;
      }
      const { requestedPort, port } = this.#inspector;
      if (requestedPort !== 0 && port !== requestedPort) this.#status.warn(`Port ${requestedPort} is taken; the inspector is on port ${port} instead.`);
    }
    try {
      return await this.#runTunnel();
    } finally {
      await this.#inspector?.close();
    }
  }

  async #runTunnel(): Promise<number> {
    const settings = this.#settings;

    try {
      this.#tunnel = await this.#create({ initial: true, signal: this.#stop.signal });
    } catch (error) {
      if (error instanceof AgentFatal) {
        this.#status.warn(`error: ${error.message}`);
        return error.exitCode;
      }
      throw error;
    }
    if (!this.#tunnel) return this.#exitCode();

    this.#banner(this.#tunnel);
    this.#status.update({ state: 'starting', url: this.#tunnel.url, port: settings.port, reconnects: 0, localListening: this.#localListening });
    this.#status.start();

    if (!this.#stopping()) {
      this.#supervisor.start(this.#tunnel.cloudflaredToken);
      this.#refresh();
    }
    const heartbeats = this.#stopping()
      ? Promise.resolve()
      : this.#heartbeatLoop(this.#stop.signal).catch((error: unknown) => {
        // A bug must still end in a clean shutdown, not a hang with the tunnel alive.
        this.#finish({ code: 1, message: `internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}` });
      });
    await this.#done;
    return this.#shutdown(heartbeats);
  }

  #stopping(): boolean {
    return this.#outcome !== undefined;
  }

  #exitCode(): number {
    return this.#outcome?.code ?? 0;
  }

  #finish(outcome: { code: number; message?: string; stoppedBy?: string }): void {
    if (this.#outcome) {
      if (outcome.code === 130) this.#outcome = outcome;
      return;
    }
    this.#outcome = outcome;
    this.#stop.abort();
    this.#resolveDone();
  }

  async #shutdown(heartbeats: Promise<void>): Promise<number> {
    const outcome = this.#outcome ?? { code: 0 };
    this.#status.update({ state: 'stopping', detail: outcome.stoppedBy });
    if (outcome.message) this.#status.warn(`error: ${outcome.message}`);
    // The loop may be mid-create (not aborted, so a tunnel is never made and forgotten): wait for it,
    // while cloudflared stops.
    await Promise.all([heartbeats.catch(() => {}), this.#supervisor.stop()]);
    const tunnel = this.#tunnel;
    const ended = tunnel && !this.#forced ? await this.#endTunnel(tunnel) : undefined;
    if (tunnel && ended === true) this.#status.info(`Tunnel ${tunnel.hostname} ended.`);
    else if (tunnel && !this.#forced) {
      this.#status.warn(`warning: could not end tunnel ${tunnel.hostname} (${ended}); the broker reaps it once its heartbeats stop.`);
    } else if (tunnel) {
      this.#status.warn(`Forced exit: tunnel ${tunnel.hostname} is left to the broker, which reaps it once its heartbeats stop.`);
    }
    this.#status.update({ state: 'stopped', detail: undefined });
    this.#status.stop();
    // A second signal during the shutdown turns it into 130.
    return this.#exitCode();
  }

  /**
   * DELETE, retried briefly within SHUTDOWN_DELETE_BUDGET_MS; true, or why it failed. 404
   * means there is nothing left to end. A second Ctrl-C (the force signal) aborts it at once.
   */
  async #endTunnel(tunnel: CreatedTunnel): Promise<true | string> {
    const started = this.#now();
    let last = 'no time left';
    for (let attempt = 0; attempt < DELETE_ATTEMPTS && !this.#forced; attempt++) {
      const leftMs = SHUTDOWN_DELETE_BUDGET_MS - (this.#now() - started);
      if (leftMs <= 0) break;
      try {
        await this.#client.deleteTunnel(tunnel.tunnelId, this.#force.signal, Math.min(leftMs, DELETE_TIMEOUT_MS));
        return true;
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        if (error.gone) return true;
        last = error.message;
        if (!error.transient) return last;
        const delayMs = retryAfterDelay(error.retryAfterSec, backoffDelay(attempt, 300, 1_000));
        if (this.#now() - started + delayMs >= SHUTDOWN_DELETE_BUDGET_MS) break;
        await sleep(delayMs, this.#force.signal);
      }
    }
    return this.#forced ? 'interrupted by a second signal' : last;
  }

  #banner(tunnel: CreatedTunnel): void {
    const lines = [
      '',
      `  Forwarding   ${tunnel.url}  ->  http://localhost:${this.#settings.port}`,
      `  Who can open ${describeAccess(tunnel.access)}`,
      ...(this.#inspector ? [`  Inspector    ${this.#inspector.url}  (every request, in full; replay)`] : []),
      `  Tunnel       ${tunnel.tunnelId}`,
      `  Broker       ${this.#settings.connection.server}`,
      '',
      '  Ctrl-C ends the tunnel.',
      '',
    ];
    this.#status.info(lines.join('\n'));
  }

  #refresh(): void {
    let state: AgentState;
    let detail: string | undefined;
    if (this.#outcome) state = 'stopping';
    else if (this.#recreating) state = 'recreating';
    else if (this.#heartbeatFailing) {
      state = 'reconnecting';
      detail = this.#heartbeatFailing;
    } else if (this.#supervisor.state !== 'running') state = 'restarting cloudflared';
    else state = 'online';
    if (this.#outcome) return;
    this.#status.update({ state, detail, reconnects: this.#reconnects, localListening: this.#localListening });
  }

  #onCrash(info: ExitInfo, restartInMs: number | undefined, crashes: number): void {
    if (restartInMs === undefined) return;
    this.#reconnects += 1;
    const last = info.lastOutput.at(-1);
    this.#status.warn(
      `cloudflared ${describeExit(info)}${last && !this.#settings.verbose ? ` (last output: ${last})` : ''}; ` +
        `restarting in ${(restartInMs / 1000).toFixed(1)} s (${crashes} exit${crashes === 1 ? '' : 's'} in the last minute)`,
    );
    this.#refresh();
    // It may have exited because the tunnel is gone upstream: find out now, not at the next heartbeat.
    this.#waker.wake();
  }

  #onGiveUp(info: ExitInfo, crashes: number): void {
    const output = info.lastOutput.length > 0 ? `\nIts last output:\n${info.lastOutput.slice(-10).map((l) => `  ${l}`).join('\n')}` : '';
    this.#finish({
      code: 1,
      message:
        `cloudflared keeps exiting (${crashes} times within ${describeDuration(this.#restartWindowSec())}; the last one ${describeExit(info)}). ` +
        `Ending the tunnel rather than keep it alive with nothing behind it.${output}\n` +
        'Run with --verbose to see everything cloudflared prints.',
    });
  }

  #restartWindowSec(): number {
    return (this.#settings.restartPolicy?.windowMs ?? 60_000) / 1000;
  }

  /**
   * Runs for the session's lifetime; every pass sleeps (the period, or a backoff), so it
   * never spins, and the stop signal ends it.
   */
  async #heartbeatLoop(signal: AbortSignal): Promise<void> {
    let failures = 0;
    let retryInMs = 0;
    // Counts from the create, which starts the TTL.
    const schedule = new HeartbeatSchedule(this.#now);
    while (!signal.aborted) {
      const tunnel = this.#tunnel;
      if (!tunnel) return;
      const periodMs = tunnel.heartbeatIntervalSec * 1000;
      await this.#waker.sleep(failures === 0 ? schedule.delayUntilNext(periodMs) : retryInMs, signal);
      if (signal.aborted) return;
      schedule.markSent();
      try {
        const beat = await this.#beat(tunnel, signal);
        if (failures > 0) this.#status.info(`Heartbeats are getting through again (after ${failures} failed attempt${failures === 1 ? '' : 's'}).`);
        failures = 0;
        this.#heartbeatFailing = undefined;
        if (this.#settings.verbose) this.#status.info(`heartbeat ok; tunnel expires at ${beat.expiresAt} unless renewed`);
        // Wall-clock time: it is only shown to the user.
        this.#status.update({ lastHeartbeatAt: Date.now() });
        await this.#checkLocalPort();
        this.#refresh();
      } catch (error) {
        if (signal.aborted) return;
        if (!(error instanceof BrokerError)) throw error;
        if (error.gone) {
          failures = 0;
          this.#heartbeatFailing = undefined;
          await this.#recreate(tunnel, signal);
          schedule.markSent();
          continue;
        }
        if (error.status === 401) {
          const { token, tokenSource, server } = this.#settings.connection;
          this.#finish({ code: 1, message: `Heartbeats are refused. ${unauthorizedMessage(error, token, tokenSource, server)}` });
          return;
        }
        failures += 1;
        // Backoff capped at half the period, so several retries land inside the TTL; Retry-After
        // is honoured up to that cap.
        const capMs = Math.max(1_000, periodMs / 2);
        const retryAfterMs = error.retryAfterSec !== undefined ? Math.min(error.retryAfterSec * 1000, capMs) : 0;
        retryInMs = Math.max(backoffDelay(failures - 1, 250, capMs), retryAfterMs);
        const why = error.unreachable ? 'broker unreachable' : `broker answered ${error.status}${error.code ? ` ${error.code}` : ''}`;
        if (failures === 1) this.#status.warn(`Heartbeat failed (${error.message}); retrying with backoff.`);
        this.#heartbeatFailing = `${why}, retrying`;
        this.#refresh();
      }
    }
  }

  /** With the tunnel's heartbeat token when the broker issued one; the access token otherwise, or if that token is refused. */
  async #beat(tunnel: CreatedTunnel, signal: AbortSignal): Promise<{ expiresAt: string }> {
    if (tunnel.heartbeatToken && !this.#heartbeatTokenRefused.has(tunnel.tunnelId)) {
      try {
        const beat = await this.#client.heartbeat(tunnel.tunnelId, tunnel.heartbeatToken, signal);
        // The broker renews a heartbeat token nearing its expiry in the answer: an agent may run for months.
        if (typeof beat?.heartbeatToken === 'string' && beat.heartbeatToken) tunnel.heartbeatToken = beat.heartbeatToken;
        return beat;
      } catch (error) {
        if (!(error instanceof BrokerError) || (error.status !== 401 && error.status !== 403)) throw error;
        this.#heartbeatTokenRefused.add(tunnel.tunnelId);
        this.#status.warn(`The broker refused this tunnel's heartbeat token (${error.message}); heartbeating with the access token instead.`);
      }
    }
    return this.#client.heartbeat(tunnel.tunnelId, undefined, signal);
  }

  async #checkLocalPort(): Promise<void> {
    const port = this.#settings.port;
    const listening = await isLocalPortListening(port, 500);
    if (listening === this.#localListening) return;
    if (listening) this.#status.info(`localhost:${port} is accepting connections now.`);
    else this.#status.warn(`warning: Nothing is listening on localhost:${port} any more; visitors get an error page until it is back.`);
    this.#localListening = listening;
  }

  async #recreate(old: CreatedTunnel, signal: AbortSignal): Promise<void> {
    this.#recreating = true;
    this.#refresh();
    this.#status.warn(`The broker no longer has tunnel ${old.hostname} (it expired or was ended elsewhere, e.g. while this machine slept). Creating a new one...`);
    try {
      const created = await this.#create({ initial: false, signal, replacing: old });
      if (!created) return;
      this.#tunnel = created;
      this.#reconnects += 1;
      const same = created.url === old.url;
      this.#status.info(
        same
          ? `Created a new tunnel ${created.tunnelId} at the same URL: ${created.url}`
          : `Created a new tunnel ${created.tunnelId}. NEW URL: ${created.url}  (was ${old.url})`,
      );
      this.#status.update({ url: created.url });
      // Done even after a stop was requested: shutdown stops cloudflared and ends this tunnel.
      await this.#supervisor.replaceToken(created.cloudflaredToken);
    } catch (error) {
      if (!(error instanceof AgentFatal)) throw error;
      // The old tunnel is gone; nothing is left to end.
      if (this.#tunnel === old) this.#tunnel = undefined;
      this.#finish({ code: error.exitCode, message: `Could not recreate the tunnel: ${error.message}` });
    } finally {
      this.#recreating = false;
      this.#refresh();
    }
  }

  /**
   * POST /v1/tunnels under one Idempotency-Key for all its retries, so a retry after a lost
   * answer returns the tunnel the first attempt made instead of a second one. Undefined when
   * a stop was requested before anything was created. A plain stop does not abort the request
   * itself: an aborted create could leave a tunnel nobody ends.
   *
   * While the broker says the create is still running (409 IDEMPOTENCY_KEY_IN_USE), the agent
   * waits for it with the same key, up to CREATE_IN_PROGRESS_MAX_WAIT_MS, riding out transient
   * errors meanwhile. Whenever it gives up on a create the broker may have received, it first
   * looks for the tunnel that create made and ends it (#abandonCreate).
   */
  async #create(options: { initial: boolean; signal: AbortSignal; replacing?: CreatedTunnel }): Promise<CreatedTunnel | undefined> {
    const { slug, connection, access } = this.#settings;
    // Through the recording proxy when the inspector runs: the tunnel is created for its port.
    const port = this.#inspector?.proxyPort ?? this.#settings.port;
    // A new random slug when none was asked for: the spec'd behaviour, and a URL nobody else now holds.
    const requested = slug;
    const input = { port, idempotencyKey: randomUUID(), ...(requested ? { slug: requested } : {}), ...(access ? { access } : {}) };
    const started = this.#now();
    const budgetMs = options.initial ? Number.POSITIVE_INFINITY : RECREATE_BUDGET_MS;
    let waitedForOld = 0;
    // Set once the broker may be running a create under this key: an attempt whose answer was
    // lost, or one it said was still in progress. Giving up must then find what it made.
    let mayHaveCreated = false;
    // When the broker first said the create is still in progress; from then on the agent waits for it.
    let inProgressSince: number | undefined;
    let polls = 0;
    const giveUp = async (fatal?: AgentFatal): Promise<undefined> => {
      if (inProgressSince !== undefined) this.#status.update({ detail: undefined });
      if (mayHaveCreated && !this.#forced) await this.#abandonCreate(input);
      if (fatal) throw fatal;
      return undefined;
    };
    // Bounded: the first create by INITIAL_CREATE_ATTEMPTS (everything else there is fatal), a recreate by its budget,
    // and the wait for a create in progress by CREATE_IN_PROGRESS_MAX_WAIT_MS.
    for (let attempt = 0; ; attempt++) {
      if (options.signal.aborted) return giveUp();
      if (this.#now() - started > budgetMs) return giveUp(new AgentFatal(`gave up after trying for ${describeDuration(budgetMs / 1000)}.`));
      try {
        // Only a second Ctrl-C aborts it (the user chose to leave things to the reaper).
        const created = await this.#client.createTunnel(input, this.#force.signal);
        if (inProgressSince !== undefined) this.#status.update({ detail: undefined });
        return created;
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        if (this.#forced) return undefined;
        if (error.answerLost || error.code === 'IDEMPOTENCY_KEY_IN_USE') mayHaveCreated = true;
        const context = { server: connection.server, slug: requested, token: connection.token, tokenSource: connection.tokenSource };
        let delayMs: number;
        if (error.status === 401) return giveUp(new AgentFatal(unauthorizedMessage(error, connection.token, connection.tokenSource, connection.server)));
        if (error.code === 'IDEMPOTENCY_KEY_IN_USE' || (inProgressSince !== undefined && (error.transient || error.code === 'RATE_LIMITED'))) {
          // Our own create is running on the broker: wait for it under the same key (Retry-After,
          // never sooner), through network errors, 5xx and rate limits, until the bound.
          inProgressSince ??= this.#now();
          delayMs = retryAfterDelay(error.retryAfterSec, backoffDelay(polls++, 1_000, CREATE_IN_PROGRESS_MAX_POLL_MS));
          const waitedMs = this.#now() - inProgressSince;
          if (waitedMs + delayMs > CREATE_IN_PROGRESS_MAX_WAIT_MS) {
            return giveUp(new AgentFatal(
              `The broker was still creating the tunnel after ${describeDuration(waitedMs / 1000)} (${error.message}); giving up.`,
            ));
          }
          // Every poll: a cloudflared event may have redrawn the status meanwhile.
          this.#status.update({ detail: CREATE_IN_PROGRESS_DETAIL });
          if (this.#settings.verbose) this.#status.info(`create: ${error.message}; asking again in ${describeDuration(delayMs / 1000)}`);
        } else if (error.code === 'TUNNEL_SLUG_CONFLICT' || error.code === 'TUNNEL_LIMIT_EXCEEDED') {
          // While recreating, our own old tunnel may still be `ending` and hold the slug or a slot for a moment.
          const mine = await this.#client.listTunnels().catch(() => undefined);
          const oldStillThere = options.replacing && mine?.some((t) => t.id === options.replacing!.tunnelId);
          if (oldStillThere && waitedForOld < OLD_TUNNEL_RELEASE_MS) {
            delayMs = 1_000;
            waitedForOld += delayMs;
          } else {
            const holder = error.code === 'TUNNEL_SLUG_CONFLICT' ? mine?.find((t) => t.slug === requested) : undefined;
            return giveUp(new AgentFatal(createFailureMessage(error, { ...context, ownHolder: holder ? { id: holder.id, hostname: holder.hostname } : undefined })));
          }
        } else if (error.status === 429) {
          if (options.initial) return giveUp(new AgentFatal(createFailureMessage(error, context)));
          delayMs = (error.retryAfterSec ?? 60) * 1000;
          this.#status.warn(`Rate-limited by the broker; retrying in ${describeDuration(delayMs / 1000)}.`);
        } else if (error.transient) {
          delayMs = Math.max(backoffDelay(attempt, 500, options.initial ? 2_000 : 30_000), (error.retryAfterSec ?? 0) * 1000);
          const stop = options.initial ? attempt + 1 >= INITIAL_CREATE_ATTEMPTS || delayMs > INITIAL_CREATE_MAX_WAIT_MS : this.#now() - started + delayMs > budgetMs;
          if (stop) return giveUp(new AgentFatal(createFailureMessage(error, context)));
          if (options.initial || attempt === 0) this.#status.warn(`Creating the tunnel failed (${error.message}); retrying in ${describeDuration(delayMs / 1000)}.`);
        } else {
          return giveUp(new AgentFatal(createFailureMessage(error, context)));
        }
        await sleep(delayMs, options.signal);
      }
    }
  }

  /**
   * Giving up on a create the broker may still finish (the wait bound passed, a stop was
   * requested, or the broker stopped answering): replay its Idempotency-Key a few times, within
   * a few seconds, to learn the tunnel it made, and end that, so nothing the agent caused
   * holds a slug and a quota slot until the reaper gets to it. A second Ctrl-C cuts it short.
   * (Had the broker's create failed, the key is free and the replay creates anew: that tunnel
   * is ended the same way.)
   */
  async #abandonCreate(input: { port: number; slug?: string; idempotencyKey: string; access?: TunnelAccess }): Promise<void> {
    const started = this.#now();
    this.#status.info('Checking whether the broker finished creating the tunnel, so as to end it (press Ctrl-C again to quit at once)...');
    let last = 'no answer';
    for (let attempt = 0; attempt < ABANDON_REPLAY_ATTEMPTS && !this.#forced; attempt++) {
      const leftMs = ABANDON_REPLAY_WINDOW_MS - (this.#now() - started);
      if (leftMs <= 0) break;
      let created: CreatedTunnel;
      try {
        created = await this.#client.createTunnel(input, AbortSignal.any([this.#force.signal, AbortSignal.timeout(Math.ceil(leftMs))]));
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        if (this.#forced) break;
        // Any other answer is final for this key: the create failed and was rolled back, nothing to end.
        if (!(error.code === 'IDEMPOTENCY_KEY_IN_USE' || error.code === 'RATE_LIMITED' || error.transient)) return;
        last = error.message;
        const delayMs = retryAfterDelay(error.retryAfterSec, backoffDelay(attempt, 500, 2_000));
        if (this.#now() - started + delayMs >= ABANDON_REPLAY_WINDOW_MS) break;
        await sleep(delayMs, this.#force.signal);
        continue;
      }
      const ended = await this.#endTunnel(created);
      if (ended === true) this.#status.info(`The broker had finished creating tunnel ${created.hostname} (${created.tunnelId}); ended it.`);
      else this.#status.warn(`warning: could not end tunnel ${created.hostname} (${ended}); the broker reaps it once its heartbeat TTL passes.`);
      return;
    }
    this.#status.warn(
      `warning: the broker had not finished the create (${last}). If it does, the tunnel is reaped once its heartbeat TTL passes; ` +
        'meanwhile `tunnel list` shows it and `tunnel stop <id>` ends it.',
    );
  }
}
