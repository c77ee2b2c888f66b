// A forward HTTP proxy on 127.0.0.1: a branch office's corporate proxy in miniature.
// - CONNECT host:port → a raw TCP tunnel. undici's ProxyAgent (and EnvHttpProxyAgent) tunnels this
//   way even for http:// targets unless created with `proxyTunnel: false`.
// - Absolute-form requests (`GET http://host:port/path HTTP/1.1`) → forwarded with node:http,
//   hop-by-hop headers dropped. That is what ProxyAgent({ proxyTunnel: false }) and curl send.
// Only loopback targets are allowed by default (403 otherwise); every attempt is still recorded.
import http from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { listenOnLoopback } from './loopback.ts';

export type HttpProxyOptions = {
  /** Which targets may be reached. Default: 127.0.0.1, ::1 and localhost only. */
  allowTarget?: (hostname: string, port: number) => boolean;
};

export type HttpProxy = {
  /** http://127.0.0.1:PORT */
  url: string;
  /** `host:port` of each CONNECT, in order. */
  connects: ReadonlyArray<string>;
  /** Absolute-form URL of each plain HTTP request, in order. */
  requests: ReadonlyArray<string>;
  /** Forget what was recorded so far. */
  reset(): void;
  stop(): Promise<void>;
};

const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
const CONNECT_TIMEOUT_MS = 10_000;

export async function startHttpProxy(opts: HttpProxyOptions = {}): Promise<HttpProxy> {
  const allowTarget = opts.allowTarget ?? ((hostname: string) => LOOPBACK.has(hostname));
  const connects: string[] = [];
  const requests: string[] = [];
  const tunnels = new Set<Duplex>();

  const server = http.createServer((req, res) => {
    const target = req.url ?? '';
    let url: URL;
    try {
      url = new URL(target);
      if (url.protocol !== 'http:') throw new Error('not http');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('forward proxy: expected an absolute-form http:// request target\n');
      return;
    }
    requests.push(target);
    const port = url.port === '' ? 80 : Number(url.port);
    if (!allowTarget(url.hostname, port)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`forward proxy: ${url.host} not allowed\n`);
      return;
    }
    const upstream = http.request(
      {
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port,
        method: req.method,
        path: `${url.pathname}${url.search}`,
        headers: stripHopByHop(req.headers),
        agent: false,
        timeout: CONNECT_TIMEOUT_MS,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, stripHopByHop(upRes.headers));
        upRes.pipe(res);
        upRes.once('error', () => res.destroy());
      },
    );
    upstream.once('timeout', () => upstream.destroy(new Error('upstream timeout')));
    upstream.once('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`forward proxy: ${err.message}\n`);
      else res.destroy();
    });
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });

  server.on('connect', (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
    const target = req.url ?? '';
    connects.push(target);
    tunnels.add(client);
    client.once('close', () => tunnels.delete(client));
    client.on('error', () => client.destroy());
    // authority-form: host:port, IPv6 hosts in brackets
    const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/@[\]]+):(\d{1,5})$/.exec(target);
    const hostname = m?.[1];
    const port = Number(m?.[2]);
    if (hostname === undefined || !(port > 0 && port < 65536)) {
      client.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      return;
    }
    if (!allowTarget(hostname, port)) {
      client.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: hostname.replace(/^\[|\]$/g, ''), port, timeout: CONNECT_TIMEOUT_MS });
    tunnels.add(upstream);
    upstream.once('close', () => tunnels.delete(upstream));
    let connected = false;
    upstream.once('timeout', () => {
      if (!connected) upstream.destroy(new Error('connect timeout'));
    });
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => {
      if (!connected) client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n');
      else client.destroy();
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });

  const port = await listenOnLoopback(server);

  let stopping: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    connects,
    requests,
    reset() {
      connects.length = 0;
      requests.length = 0;
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of tunnels) s.destroy();
      });
      return stopping;
    },
  };
}

function stripHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ''),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}
