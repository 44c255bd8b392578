import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** The UI's settings: deep links, operations listed, nothing kept in the browser. */
const UI_CONFIG = { deepLinking: true, docExpansion: 'list', persistAuthorization: false } as const;

/** Response headers the inner app sets that the outer reply sets for itself. */
const HOP_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'date']);

/**
 * /docs/json and /docs/yaml (the OpenAPI document) and Swagger UI at /docs.
 *
 * Swagger UI (@fastify/swagger-ui, @fastify/static and their assets) costs ~4.5 MiB of a
 * broker's idle RSS (bench/results.md section 4), for a page an operator opens now and then.
 * So it is loaded on the first request under /docs: a small inner Fastify app with the UI,
 * given this broker's document, answers through `inject`, and stays for later requests.
 */
export function registerDocsRoutes(app: FastifyInstance, prefix: string): void {
  app.get(`${prefix}/json`, { schema: { hide: true } }, () => app.swagger());
  app.get(`${prefix}/yaml`, { schema: { hide: true } }, async (_request, reply) => reply.type('application/x-yaml').send(app.swagger({ yaml: true })));

  let inner: Promise<FastifyInstance> | undefined;
  const load = () => {
    inner ??= buildUi(app, prefix).catch((error: unknown) => {
      inner = undefined;
      throw error;
    });
    return inner;
  };
  app.addHook('onClose', async () => {
    await (await inner?.catch(() => undefined))?.close();
  });
  const forward = async (request: FastifyRequest, reply: FastifyReply) => {
    const ui = await load();
    const res = await ui.inject({ method: request.method as 'GET' | 'HEAD', url: request.url, headers: request.headers });
    // The broker's own 404 (the error envelope), not the inner app's.
    if (res.statusCode === 404) return reply.callNotFound();
    for (const [name, value] of Object.entries(res.headers)) if (value !== undefined && !HOP_HEADERS.has(name)) reply.header(name, value);
    return reply.code(res.statusCode).send(res.rawPayload);
  };
  app.get(prefix, { schema: { hide: true } }, forward);
  app.get(`${prefix}/*`, { schema: { hide: true } }, forward);
}

async function buildUi(app: FastifyInstance, prefix: string): Promise<FastifyInstance> {
  const [{ default: Fastify }, { default: fastifySwagger }, { default: fastifySwaggerUi }] = await Promise.all([
    import('fastify'),
    import('@fastify/swagger'),
    import('@fastify/swagger-ui'),
  ]);
  const ui = Fastify({ logger: false });
  await ui.register(fastifySwagger, { mode: 'static', specification: { document: app.swagger() as never } });
  await ui.register(fastifySwaggerUi, { routePrefix: prefix, staticCSP: true, uiConfig: UI_CONFIG });
  await ui.ready();
  return ui;
}
