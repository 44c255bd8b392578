import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { type BodyCapture, headerValue, isBinaryContentType, type RawHeaders } from './exchange-store.js';

/** A captured body as the API shows it: text (pretty-printed when JSON or a form), or only its type and size. */
export interface BodyView {
  size: number;
  /** Bytes kept (at most the cap). */
  captured: number;
  /** Why not all of it is shown: cut at the cap, binary, or dropped for the memory budget. */
  omitted: 'truncated' | 'binary' | 'dropped' | null;
  contentType: string | null;
  kind: 'empty' | 'json' | 'form' | 'text' | 'binary';
  /** The body as text (decompressed when it came compressed), when it is text. */
  text?: string;
  /** JSON re-indented, when it parses. */
  pretty?: string;
  /** A form body's fields, in order. */
  form?: Array<[string, string]>;
  /** Content-Encoding the view undid. */
  decoded?: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function inflate(bytes: Buffer, encoding: string, limit: number): Buffer | undefined {
  try {
    const options = { maxOutputLength: limit };
    if (encoding === 'gzip' || encoding === 'x-gzip') return gunzipSync(bytes, options);
    if (encoding === 'deflate') return inflateSync(bytes, options);
    if (encoding === 'br') return brotliDecompressSync(bytes, options);
  } catch {
    return undefined;
  }
  return undefined;
}

/** Text when the bytes are valid UTF-8 without NULs (a cut at the cap may split the last character: allowed). */
function asText(bytes: Buffer, cut: boolean): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return utf8.decode(bytes);
  } catch {
    if (!cut) return undefined;
    try {
      return utf8.decode(bytes.subarray(0, Math.max(0, bytes.length - 3)));
    } catch {
      return undefined;
    }
  }
}

export function viewBody(body: BodyCapture, headers: RawHeaders | undefined, cap: number): BodyView {
  const contentType = headerValue(headers, 'content-type') ?? null;
  const base = { size: body.size, captured: body.kept, contentType };
  if (body.size === 0) return { ...base, omitted: null, kind: 'empty' };
  if (body.omitted === 'binary' || (body.kept === 0 && isBinaryContentType(contentType ?? undefined))) return { ...base, omitted: 'binary', kind: 'binary' };
  if (body.omitted === 'dropped') return { ...base, omitted: 'dropped', kind: isBinaryContentType(contentType ?? undefined) ? 'binary' : 'text' };
  const cut = body.kept < body.size;
  let bytes = body.bytes();
  let decoded: string | undefined;
  const encoding = headerValue(headers, 'content-encoding')?.trim().toLowerCase();
  if (encoding && encoding !== 'identity') {
    const inflated = cut ? undefined : inflate(bytes, encoding, cap * 4);
    if (!inflated) return { ...base, omitted: cut ? 'truncated' : 'binary', kind: 'binary' };
    bytes = inflated;
    decoded = encoding;
  }
  const text = isBinaryContentType(contentType ?? undefined) ? undefined : asText(bytes, cut);
  if (text === undefined) return { ...base, omitted: 'binary', kind: 'binary' };
  const view: BodyView = { ...base, omitted: cut ? 'truncated' : null, kind: 'text', text, ...(decoded ? { decoded } : {}) };
  const type = (contentType ?? '').toLowerCase();
  if (/[/+]json\b/.test(type) || (!type && /^\s*[[{]/.test(text))) {
    view.kind = 'json';
    if (!cut) {
      try {
        view.pretty = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // not valid JSON after all: shown raw
      }
    }
  } else if (type.startsWith('application/x-www-form-urlencoded')) {
    view.kind = 'form';
    view.form = [...new URLSearchParams(text)];
  }
  return view;
}
