// Sending fuzz cases over raw TCP and judging the answers: the fuzz test's engine, also used
// by tests that fuzz a mirror in the middle of a larger scenario (test/integration/recovery.test.ts).
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fuzzCase, type FuzzCase, type FuzzTarget } from './fuzz-cases.ts';

export const CONCURRENCY = 32;
/** No response and no close within this long (not counting time the event loop was blocked) is a hang. */
export const DEADLINE_MS = 5_000;
/** Longest a case may run at all, blocked loop or not. */
const HARD_DEADLINE_MS = 60_000;
/** The event loop stalling this long means one request monopolised the process. */
export const LOOP_BLOCK_MS = 1_000;
export const MONITOR_INTERVAL_MS = 20;

// ---------------------------------------------------------------------------------------------
// Raw HTTP exchange

export type ParsedResponse = { status: number; headers: Map<string, string>; body: Buffer; complete: boolean };

/**
 * Parse as many responses as the bytes hold. Bodies are delimited by
 * Content-Length or chunked encoding; otherwise they run to the close.
 * `methods[k]` is the method of the k-th request (HEAD answers carry no body).
 */
function parseResponses(buf: Buffer, methods: string[], closed: boolean, need?: { bytes: number }): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (end === -1) {
      out.push({ status: statusOf(buf.subarray(at).toString('latin1')), headers: new Map(), body: Buffer.alloc(0), complete: false });
      break;
    }
    const head = buf.subarray(at, end).toString('latin1');
    const lines = head.split('\r\n');
    const status = statusOf(lines[0] ?? '');
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) {
        const k = line.slice(0, colon).trim().toLowerCase();
        const v = line.slice(colon + 1).trim();
        headers.set(k, headers.has(k) ? `${headers.get(k)}, ${v}` : v);
      }
    }
    let p = end + 4;
    if (status >= 100 && status < 200 && status !== 101) {
      at = p; // 100 Continue and friends: the real answer follows
      continue;
    }
    const method = methods[out.length] ?? 'GET';
    if (method === 'HEAD' || status === 204 || status === 304 || status === 101 || status === 0) {
      out.push({ status, headers, body: Buffer.alloc(0), complete: status !== 0 });
      at = p;
      if (status === 101 || status === 0) break;
      continue;
    }
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    if (te && /chunked/i.test(te)) {
      const parts: Buffer[] = [];
      let complete = false;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', p, 'latin1');
        if (lineEnd === -1) break;
        const size = Number.parseInt(buf.subarray(p, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd, 'latin1');
          if (trailerEnd === -1 && buf.length < lineEnd + 4) break;
          p = trailerEnd === -1 ? lineEnd + 4 : trailerEnd + 4;
          complete = true;
          break;
        }
        if (buf.length < lineEnd + 2 + size + 2) break;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      out.push({ status, headers, body: Buffer.concat(parts), complete });
      if (!complete) break;
      at = p;
    } else if (cl !== undefined && /^\d+$/.test(cl)) {
      const n = Number(cl);
      const body = buf.subarray(p, Math.min(buf.length, p + n));
      out.push({ status, headers, body, complete: body.length === n });
      if (body.length < n) {
        if (need) need.bytes = p + n;
        break;
      }
      at = p + n;
    } else {
      out.push({ status, headers, body: buf.subarray(p), complete: closed });
      break;
    }
  }
  return out;
}

function statusOf(line: string): number {
  return Number(/^HTTP\/\d(?:\.\d)? (\d{3})/.exec(line)?.[1] ?? 0);
}

export type Outcome = {
  c: FuzzCase;
  responses: ParsedResponse[];
  /** 'complete': every expected response arrived; 'closed': the server closed (or reset) first; 'hang': neither in time. */
  end: 'complete' | 'closed' | 'hang';
  socketError: string | undefined;
  elapsedMs: number;
};

/** Tracks event-loop stalls: total blocked time, and spikes with the cases in flight when they ended. */
export class LoopMonitor {
  blockedTotalMs = 0;
  lastTick = performance.now();
  readonly spikes: Array<{ lagMs: number; inFlight: number[] }> = [];
  readonly inFlight = new Set<number>();
  #timer: NodeJS.Timeout;

  constructor() {
    this.#timer = setInterval(() => {
      const now = performance.now();
      const lag = now - this.lastTick - MONITOR_INTERVAL_MS;
      this.lastTick = now;
      if (lag > 0) this.blockedTotalMs += lag;
      if (lag > LOOP_BLOCK_MS) this.spikes.push({ lagMs: Math.round(lag), inFlight: [...this.inFlight] });
    }, MONITOR_INTERVAL_MS);
  }

  /** Blocked time so far, including a stall in progress that the interval has not seen yet. */
  blockedNow(): number {
    return this.blockedTotalMs + Math.max(0, performance.now() - this.lastTick - MONITOR_INTERVAL_MS);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export function exchange(port: number, c: FuzzCase, monitor: LoopMonitor): Promise<Outcome> {
  return new Promise((resolve) => {
    const started = performance.now();
    const blockedAtStart = monitor.blockedNow();
    monitor.inFlight.add(c.index);
    const sock = connect({ port, host: '127.0.0.1', noDelay: true });
    const received: Buffer[] = [];
    let socketError: string | undefined;
    let done = false;
    let halfCloseTimer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;

    const finish = (end: Outcome['end']): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearTimeout(halfCloseTimer);
      monitor.inFlight.delete(c.index);
      const buf = Buffer.concat(received);
      sock.destroy();
      resolve({ c, responses: parseResponses(buf, c.methods, end !== 'hang'), end, socketError, elapsedMs: Math.round(performance.now() - started) });
    };
    // A stalled event loop (this process is the server too) is not the server ignoring us: don't count it.
    const arm = (ms: number): void => {
      deadline = setTimeout(() => {
        const elapsed = performance.now() - started;
        const effective = elapsed - (monitor.blockedNow() - blockedAtStart);
        if (effective < DEADLINE_MS && elapsed < HARD_DEADLINE_MS) arm(DEADLINE_MS - effective + 10);
        else finish('hang');
      }, ms);
    };
    arm(DEADLINE_MS);

    // A large body arrives in many chunks: parse again only once it can be complete (not per chunk).
    let receivedBytes = 0;
    const need = { bytes: 0 };
    sock.on('data', (chunk: Buffer) => {
      received.push(chunk);
      receivedBytes += chunk.length;
      if (receivedBytes < need.bytes) return;
      need.bytes = 0;
      const parsed = parseResponses(Buffer.concat(received), c.methods, false, need);
      if (parsed.length >= c.methods.length && parsed.every((r) => r.complete)) finish('complete');
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      socketError = err.code ?? err.message;
    });
    sock.on('close', () => finish('closed'));
    sock.once('connect', () => {
      void (async () => {
        for (const [i, chunk] of c.chunks.entries()) {
          if (done || sock.destroyed) return;
          if (i > 0) await sleep(1);
          sock.write(chunk);
        }
        if (c.halfCloseAfterMs !== undefined) {
          halfCloseTimer = setTimeout(() => {
            if (!done && !sock.destroyed) sock.end();
          }, c.halfCloseAfterMs);
        }
      })();
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Judging one outcome

/**
 * 5xx is never acceptable, with one exception: 505 from the HTTP layer (not the app) to a request line
 * whose version is not 1.0 or 1.1, which is the RFC 9110 §15.6.6 answer to a version the server does not
 * speak. Node 24's parser never actually sends it (it answers 400 to HTTP/1.2, /3.0, /11.1, and hands
 * 0.9, 1.0, 1.1 and 2.0 requests to the app), so the exception only keeps a future Node from failing
 * the test for being more precise. 501 for an unknown method is not allowed: Node answers those 400.
 */
function unsupportedVersion(c: FuzzCase): boolean {
  const line = Buffer.concat(c.chunks).subarray(0, 4096).toString('latin1').split(/\r?\n/)[0] ?? '';
  const v = /\sHTTP\/(\S*)\s*$/i.exec(line)?.[1];
  return v !== undefined && v !== '1.1' && v !== '1.0';
}

export type Problem = { text: string; /** Which response it is about, if one. */ response?: number };

/** Problems with one outcome; empty when fine. */
export function judge(o: Outcome): Problem[] {
  const out: Problem[] = [];
  const problems = { push: (text: string, response?: number) => out.push(response === undefined ? { text } : { text, response }) };
  if (o.end === 'hang') problems.push(`HANG: no response and no close within ${DEADLINE_MS} ms (got ${o.responses.length} partial responses)`);
  for (const [k, r] of o.responses.entries()) {
    if (!r.complete && o.end !== 'hang') {
      // Cut off by a close we asked for (half-close) or a reset after an error is fine; a response the server
      // started and did not finish on a connection we left alone means it broke its own answer.
      if (o.c.halfCloseAfterMs === undefined && o.socketError === undefined) problems.push(`response ${k}: ${r.status || 'partial head'} cut short by the server (${r.body.length} body bytes)`, k);
      continue;
    }
    if (r.status === 0) {
      if (r.complete || o.end === 'hang') problems.push(`response ${k}: not an HTTP response`, k);
      continue;
    }
    const fromApp = r.headers.has('x-request-id');
    if (r.status >= 500) {
      const allowed = !fromApp && r.status === 505 && unsupportedVersion(o.c);
      if (!allowed) problems.push(`response ${k}: status ${r.status}${fromApp ? ` (reqId ${r.headers.get('x-request-id')})` : ' from the HTTP layer'} body ${JSON.stringify(r.body.subarray(0, 300).toString('latin1'))}`, k);
      continue;
    }
    if (!fromApp) {
      // Node's parser (400, 431, 413, 408, 417) or the hono adapter refusing the request before the app (400).
      if (r.status < 400) problems.push(`response ${k}: ${r.status} without X-Request-Id: something other than the app answered success`, k);
      continue;
    }
    if (r.status >= 400) {
      const ct = r.headers.get('content-type') ?? '';
      if (!ct.startsWith('application/json')) problems.push(`response ${k}: app error ${r.status} with Content-Type ${JSON.stringify(ct)}`, k);
      const method = o.c.methods[k] ?? 'GET';
      if (method !== 'HEAD') {
        try {
          const body = JSON.parse(r.body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
          const e = body.errors?.[0];
          if (typeof e?.code !== 'string' || typeof e.message !== 'string') throw new Error('no errors[0].code/message');
        } catch (err) {
          problems.push(`response ${k}: app error ${r.status} without an OCI error body (${(err as Error).message}): ${JSON.stringify(r.body.subarray(0, 200).toString('latin1'))}`, k);
        }
      }
    }
  }
  return out;
}

export function bucketOf(o: Outcome): string {
  if (o.end === 'hang') return 'HANG';
  const first = o.responses.find((r) => r.status !== 0);
  if (!first) return o.socketError ? `closed(${o.socketError})` : 'closed';
  return `${first.status}${first.headers.has('x-request-id') ? '' : '*'}`;
}


/** Send the cases with index in `indices` (CONCURRENCY at a time) to 127.0.0.1:port; outcomes in index order. */
export async function runCases(port: number, seed: string, indices: number[], target: FuzzTarget, monitor: LoopMonitor): Promise<Outcome[]> {
  let next = 0;
  const results: Outcome[] = [];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = indices[next++];
        if (i === undefined) return;
        results.push(await exchange(port, fuzzCase(seed, i, target), monitor));
      }
    }),
  );
  return results.sort((a, b) => a.c.index - b.c.index);
}
