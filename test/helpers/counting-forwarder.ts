import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { closeWithin, listenOnLoopback } from './loopback.ts';

export type ForwardedRequest = {
  method: string;
  /** Path plus query, as received. */
  path: string;
  /** 0 until the target answers; 502 if it could not be reached. */
  status: number;
  /** Response body bytes sent to the client so far. */
  bytes: number;
  /** Request headers as received from the client. */
  headers: Record<string, string | string[] | undefined>;
  /** True once the response has ended or was aborted. */
  done: boolean;
};

export type CountingForwarder = {
  url: string;
  host: string;
  /** Entries are pushed when a request arrives and updated in place as it progresses. */
  readonly requests: ReadonlyArray<ForwardedRequest>;
  count(filter?: { method?: string; pathIncludes?: string | RegExp }): number;
  bytesOut(): number;
  reset(): void;
  setTarget(url: string): void;
  stop(): Promise<void>;
};

export type CountingForwarderOptions = {
  target: string;
  /** Response body throughput limit shared by all connections. */
  bytesPerSecond?: number;
  /** Delay added before each request is forwarded. */
  latencyMs?: number;
  /** Answers to these requests go out chunked, without the upstream's Content-Length (as some CDNs send blobs). */
  withoutLength?: (req: { method: string; path: string }) => boolean;
};

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'upgrade', 'te', 'trailer']);

function stripHopByHop(h: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/**
 * Single token bucket shared by every response. Refilled every 10 ms; waiters are served FIFO and
 * re-queue for the remainder, so concurrent responses share the rate roughly evenly.
 */
class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();
  #waiters: Array<{ want: number; resolve: (granted: number) => void }> = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(bytesPerSecond: number) {
    this.#rate = bytesPerSecond;
    this.#burst = Math.max(1, Math.floor(bytesPerSecond / 50)); // 20 ms worth
    this.#tokens = this.#burst;
  }

  /** Resolves with 1..want bytes that may be sent now (0 after close()). */
  take(want: number): Promise<number> {
    this.#refill();
    if (this.#waiters.length === 0 && this.#tokens >= 1) return Promise.resolve(this.#grant(want));
    return new Promise((resolve) => {
      this.#waiters.push({ want, resolve });
      this.#timer ??= setInterval(() => this.#tick(), 10);
    });
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const w of this.#waiters.splice(0)) w.resolve(0);
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) * this.#rate) / 1000);
    this.#last = now;
  }

  #grant(want: number): number {
    const n = Math.max(1, Math.min(want, Math.floor(this.#tokens)));
    this.#tokens -= n;
    return n;
  }

  #tick(): void {
    this.#refill();
    while (this.#waiters.length > 0 && this.#tokens >= 1) {
      const w = this.#waiters.shift();
      w?.resolve(this.#grant(w.want));
    }
    if (this.#waiters.length === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** Counts bytes into the record and, with a bucket, releases them no faster than it allows. */
class Meter extends Transform {
  readonly #record: ForwardedRequest;
  readonly #bucket: TokenBucket | undefined;

  constructor(record: ForwardedRequest, bucket: TokenBucket | undefined) {
    super();
    this.#record = record;
    this.#bucket = bucket;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.#bucket === undefined) {
      this.#record.bytes += chunk.length;
      done(null, chunk);
      return;
    }
    void this.#throttled(chunk, this.#bucket).then(() => done(), done);
  }

  async #throttled(chunk: Buffer, bucket: TokenBucket): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const n = await bucket.take(chunk.length - off);
      if (n === 0 || this.destroyed) return;
      this.push(chunk.subarray(off, off + n));
      this.#record.bytes += n;
      off += n;
    }
  }
}

/**
 * HTTP pass-through between the mirror and an upstream registry, recording every request that
 * went through it. Bodies are streamed both ways, never buffered.
 */
export async function startCountingForwarder(opts: CountingForwarderOptions): Promise<CountingForwarder> {
  let target = new URL(opts.target);
  let records: ForwardedRequest[] = [];
  const bucket = opts.bytesPerSecond !== undefined && opts.bytesPerSecond > 0 ? new TokenBucket(opts.bytesPerSecond) : undefined;
  const agent = new http.Agent({ keepAlive: true });
  const stopping = new AbortController();

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const record: ForwardedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      status: 0,
      bytes: 0,
      headers: { ...req.headers },
      done: false,
    };
    records.push(record);
    const finish = (): void => {
      record.done = true;
    };
    res.once('close', finish);

    if (opts.latencyMs !== undefined && opts.latencyMs > 0) {
      try {
        await sleep(opts.latencyMs, undefined, { signal: stopping.signal });
      } catch {
        res.destroy();
        return;
      }
      if (res.destroyed) return;
    }

    const dest = target;
    const upReq = http.request({
      agent,
      protocol: dest.protocol,
      hostname: dest.hostname,
      port: dest.port,
      method: record.method,
      path: record.path,
      headers: { ...stripHopByHop(req.headers), host: dest.host },
    });
    upReq.on('error', (err) => {
      if (!res.headersSent) {
        record.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`counting-forwarder: upstream ${dest.host} unreachable: ${err.message}\n`);
      } else {
        res.destroy(err);
      }
    });
    upReq.on('response', (upRes) => {
      record.status = upRes.statusCode ?? 0;
      const headers = stripHopByHop(upRes.headers);
      if (opts.withoutLength?.(record)) delete headers['content-length'];
      res.writeHead(record.status, headers);
      pipeline(upRes, new Meter(record, bucket), res, () => {
        // Errors here are client or upstream aborts; the record already holds what happened.
      });
    });
    // A client abort must not leave the upstream request dangling.
    res.once('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    req.on('error', () => upReq.destroy());
    // pipe (not pipeline) so an upstream failure does not destroy req before the 502 is written.
    req.pipe(upReq);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => res.destroy(err instanceof Error ? err : new Error(String(err))));
  });

  const port = await listenOnLoopback(server);
  const host = `127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;
  return {
    url: `http://${host}`,
    host,
    get requests() {
      return records;
    },
    count(filter = {}) {
      return records.filter((r) => {
        if (filter.method !== undefined && r.method !== filter.method.toUpperCase()) return false;
        const p = filter.pathIncludes;
        if (p === undefined) return true;
        if (typeof p === 'string') return r.path.includes(p);
        p.lastIndex = 0; // a /g or /y regex would otherwise carry state between records
        return p.test(r.path);
      }).length;
    },
    bytesOut() {
      return records.reduce((sum, r) => sum + r.bytes, 0);
    },
    reset() {
      records = [];
    },
    setTarget(url: string) {
      target = new URL(url);
    },
    stop() {
      stopped ??= closeWithin(server, 'counting-forwarder', () => {
        stopping.abort();
        bucket?.close();
        server.closeAllConnections();
        void agent.destroy();
      });
      return stopped;
    },
  };
}
