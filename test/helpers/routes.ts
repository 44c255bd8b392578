import type { FastifyInstance } from 'fastify';

/** The app's routes (`HEAD` included), from Fastify's own route tree: what it serves, not what any document says. */
export function appRoutes(app: FastifyInstance): Array<{ path: string; method: string }> {
  const routes: Array<{ path: string; method: string }> = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^((?:[│ ]   )*)[├└]── (.+?) \(([A-Z, ]+)\)$/u.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 4;
    const path = (depth === 0 ? '' : stack[depth - 1]!) + match[2];
    stack[depth] = path;
    stack.length = depth + 1;
    for (const method of match[3]!.split(', ')) routes.push({ path, method });
  }
  return routes;
}
