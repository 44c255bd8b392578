// The local app of the inspector benchmark: GET answers 1 KiB of JSON; POST reads the body and
// answers 1 KiB, or 64 KiB under /echo.
import { createServer } from 'node:http';

const small = JSON.stringify({ ok: true, pad: 'x'.repeat(1000) });
const large = JSON.stringify({ ok: true, pad: 'y'.repeat(64 * 1024 - 24) });
const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(small)) }).end(small);
    return;
  }
  req.resume();
  const answer = req.url?.startsWith('/echo') ? large : small;
  req.on('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(answer)) }).end(answer));
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`));
process.on('SIGTERM', () => process.exit(0));
