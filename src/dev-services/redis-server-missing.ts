// Its own module: src/server.ts recognises this error without loading the private-Redis code,
// which a production broker (REDIS_URL given) never runs.

/** What a newcomer without redis-server reads: the one thing the quick start needs besides Node. */
export const REDIS_SERVER_MISSING_MESSAGE =
  'REDIS_URL is not set, so the broker runs a private Redis of its own, but there is no `redis-server` on the PATH. ' +
  'Install one (macOS: `brew install redis`; Debian or Ubuntu: `sudo apt install redis-server`; or run one in a container: ' +
  '`docker run -p 6379:6379 redis:7`, then set REDIS_URL=redis://127.0.0.1:6379), or set REDIS_URL to a Redis you already have.';

export class RedisServerMissingError extends Error {
  constructor() {
    super(REDIS_SERVER_MISSING_MESSAGE);
    this.name = 'RedisServerMissingError';
  }
}
