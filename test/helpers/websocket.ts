import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key: string) => createHash('sha1').update(key + GUID).digest('base64');

/** One frame of at most 64 KiB payload: masked when a client sends it (RFC 6455 §5.2). */
function encodeFrame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | len]) : Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | 126, len >> 8, len & 0xff]);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}

/** Reads whole frames off a byte stream, unmasking as needed. */
function frameReader(onFrame: (opcode: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let buffer = Buffer.alloc(0);
  return (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (buffer.length < 2) return;
      const masked = (buffer[1]! & 0x80) !== 0;
      let len = buffer[1]! & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buffer.length < 4) return;
        len = buffer.readUInt16BE(2);
        offset = 4;
      }
      const need = offset + (masked ? 4 : 0) + len;
      if (buffer.length < need) return;
      let payload = buffer.subarray(offset + (masked ? 4 : 0), need);
      if (masked) {
        const mask = buffer.subarray(offset, offset + 4);
        payload = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
      }
      const opcode = buffer[0]! & 0x0f;
      buffer = buffer.subarray(need);
      onFrame(opcode, Buffer.from(payload));
    }
  };
}

/** A WebSocket echo server on node:http's upgrade: text and binary frames come back as sent; a close is answered. */
export function webSocketEchoHandler(server: Server, onHandshake?: (req: IncomingMessage) => void): void {
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    onHandshake?.(req);
    const key = req.headers['sec-websocket-key'];
    if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string') {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept(key)}\r\n\r\n`);
    socket.on('data', frameReader((opcode, payload) => {
      if (opcode === 0x8) {
        socket.end(encodeFrame(0x8, payload, false));
        return;
      }
      socket.write(encodeFrame(opcode, payload, false));
    }));
    socket.on('error', () => socket.destroy());
  });
}

export interface WebSocketClient {
  /** The handshake's answer headers. */
  headers: IncomingMessage['headers'];
  send(text: string): void;
  /** The next text frame. */
  next(): Promise<string>;
  close(): Promise<void>;
}

/** A minimal WebSocket client (text frames) for ws://host:port/path. */
export function connectWebSocket(url: string): Promise<WebSocketClient> {
  const { hostname, port, pathname, search } = new URL(url);
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path: pathname + search, headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13' } });
    req.on('response', (res) => reject(new Error(`no upgrade: HTTP ${res.statusCode}`)));
    req.on('error', reject);
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== accept(key)) {
        socket.destroy();
        reject(new Error('wrong Sec-WebSocket-Accept'));
        return;
      }
      const frames: string[] = [];
      const waiting: Array<(text: string) => void> = [];
      let closed: (() => void) | undefined;
      const read = frameReader((opcode, payload) => {
        if (opcode === 0x8) {
          closed?.();
          return;
        }
        const text = payload.toString('utf8');
        const waiter = waiting.shift();
        if (waiter) waiter(text);
        else frames.push(text);
      });
      socket.on('data', read);
      if (head.length > 0) read(head);
      resolve({
        headers: res.headers,
        send: (text) => socket.write(encodeFrame(0x1, Buffer.from(text), true)),
        next: () => new Promise((r) => (frames.length > 0 ? r(frames.shift()!) : waiting.push(r))),
        close: () => new Promise<void>((r) => {
          closed = () => {
            socket.destroy();
            r();
          };
          socket.write(encodeFrame(0x8, Buffer.from([0x03, 0xe8]), true));
        }),
      });
    });
    req.end();
  });
}

export function startWebSocketEchoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => res.writeHead(426).end());
  webSocketEchoHandler(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}
