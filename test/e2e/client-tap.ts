import net from 'node:net';
import { closeWithin, listenOnLoopback } from '../helpers/loopback.ts';

/** One thing a client sent to the mirror: a TLS ClientHello, or an HTTP request head. */
export type TappedRequest =
  | { kind: 'tls' }
  | {
      kind: 'http';
      method: string;
      /** Path and query exactly as the client wrote them. */
      target: string;
      /** Lower-cased header names; repeated headers joined with ', '. */
      headers: Record<string, string>;
      /** The request body (latin1), for bodies of up to MAX_CAPTURED_BODY bytes: e.g. a token POST's form. */
      body?: string;
    };

export type ClientTap = {
  /** `host:port` clients are pointed at. */
  host: string;
  url: string;
  readonly requests: ReadonlyArray<TappedRequest>;
  /** HTTP requests only, optionally filtered. */
  http(filter?: { method?: string; targetIncludes?: string | RegExp }): Array<Extract<TappedRequest, { kind: 'http' }>>;
  tlsProbes(): number;
  reset(): void;
  stop(): Promise<void>;
};

const MAX_HEAD_BYTES = 64 * 1024;
const MAX_CAPTURED_BODY = 8 * 1024;

/**
 * A byte-for-byte TCP pass-through between a container engine and Gantry that also reads the
 * client's side of the conversation, so a test can see what the engine really sent (pings, HEAD vs
 * GET, `?ns=`, Authorization, a TLS probe) without changing a single byte of it: a TLS ClientHello
 * reaches Gantry exactly as the engine sent it.
 */
export async function startClientTap(target: { host: string; port: number }): Promise<ClientTap> {
  let records: TappedRequest[] = [];
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(target.port, target.host);
    sockets.add(upstream);
    let buf = Buffer.alloc(0);
    let skipBody = 0;
    let capture: { body?: string } | undefined; // the record whose (small) body is being read
    let opaque = false; // after a TLS record or an unparseable head: just pass bytes on

    const parse = (): void => {
      for (;;) {
        if (opaque) return;
        if (skipBody > 0) {
          const n = Math.min(skipBody, buf.length);
          if (capture) capture.body = (capture.body ?? '') + buf.subarray(0, n).toString('latin1');
          buf = buf.subarray(n);
          skipBody -= n;
          if (skipBody > 0) return;
        }
        if (buf.length === 0) return;
        if (buf[0] === 0x16) {
          records.push({ kind: 'tls' });
          opaque = true;
          return;
        }
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) {
          if (buf.length > MAX_HEAD_BYTES) opaque = true;
          return;
        }
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        buf = buf.subarray(end + 4);
        const [method = '', requestTarget = ''] = (lines[0] ?? '').split(' ');
        const headers: Record<string, string> = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          if (colon <= 0) continue;
          const name = line.slice(0, colon).trim().toLowerCase();
          const value = line.slice(colon + 1).trim();
          headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
        }
        const record: Extract<TappedRequest, { kind: 'http' }> = { kind: 'http', method, target: requestTarget, headers };
        records.push(record);
        if (headers['transfer-encoding'] !== undefined) opaque = true; // pull clients never stream bodies
        skipBody = Number(headers['content-length'] ?? 0) || 0;
        capture = skipBody > 0 && skipBody <= MAX_CAPTURED_BODY ? record : undefined;
      }
    };

    client.on('data', (chunk: Buffer) => {
      if (!opaque) {
        buf = Buffer.concat([buf, chunk]);
        parse();
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });

  const port = await listenOnLoopback(server);
  const host = `127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;
  return {
    host,
    url: `http://${host}`,
    get requests() {
      return records;
    },
    http(filter = {}) {
      return records.filter((r): r is Extract<TappedRequest, { kind: 'http' }> => {
        if (r.kind !== 'http') return false;
        if (filter.method !== undefined && r.method !== filter.method.toUpperCase()) return false;
        const t = filter.targetIncludes;
        if (t === undefined) return true;
        if (typeof t === 'string') return r.target.includes(t);
        t.lastIndex = 0;
        return t.test(r.target);
      });
    },
    tlsProbes() {
      return records.filter((r) => r.kind === 'tls').length;
    },
    reset() {
      records = [];
    },
    stop() {
      stopped ??= closeWithin(server, 'client-tap', () => {
        for (const s of sockets) s.destroy();
      });
      return stopped;
    },
  };
}
