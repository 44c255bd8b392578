// The agent's recording proxy and inspector alone, as a process of its own for the benchmark
// (bench/inspector.ts bundles this file with esbuild, as the agent's build does): no broker
// and no cloudflared, the same code between the visitor and the app.
import { limitYoungGeneration } from '../../packages/agent/src/heap.js';
import { startInspector } from '../../packages/agent/src/inspector/inspector.js';

// As the agent's main does, before any load.
limitYoungGeneration();

const appPort = Number(process.argv[2]);
const inspector = await startInspector({ appPort, inspectPort: 0 });
process.stdout.write(`${JSON.stringify({ proxyPort: inspector.proxyPort, port: inspector.port })}\n`);
process.on('SIGTERM', () => void inspector.close().finally(() => process.exit(0)));
