import { ExchangeStore, INSPECT_DEFAULTS, type StoreLimits } from './exchange-store.js';
import { InspectorServer } from './inspector-server.js';
import { RecordingProxy } from './recording-proxy.js';

export interface InspectorOptions extends Partial<StoreLimits> {
  appPort: number;
  /** Where the page and API listen (127.0.0.1); the next free port when taken, any free port for 0. */
  inspectPort?: number;
}

export interface RunningInspector {
  store: ExchangeStore;
  proxy: RecordingProxy;
  /** The port the tunnel is created for. */
  proxyPort: number;
  /** The port asked for and the one it got (they differ when the asked one was taken). */
  requestedPort: number;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** The recording proxy in front of localhost:<appPort> and the inspector's page and API. */
export async function startInspector(options: InspectorOptions): Promise<RunningInspector> {
  const store = new ExchangeStore(options);
  const proxy = new RecordingProxy({ appPort: options.appPort, store });
  const server = new InspectorServer({ store, proxy, appPort: options.appPort });
  const requestedPort = options.inspectPort ?? INSPECT_DEFAULTS.port;
  try {
    const proxyPort = await proxy.listen();
    const port = await server.listen(requestedPort);
    return {
      store,
      proxy,
      proxyPort,
      requestedPort,
      port,
      url: `http://127.0.0.1:${port}`,
      async close() {
        await Promise.all([server.close(), proxy.close()]);
      },
    };
  } catch (error) {
    await Promise.all([server.close().catch(() => {}), proxy.close().catch(() => {})]);
    throw error;
  }
}
