import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { Pool } from 'undici';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// Cold fetch by N concurrent clients

export type ClientResult = {
  status: number;
  bytes: number;
  digestOk: boolean;
  /** performance.now() timestamps. */
  start: number;
  firstByte: number | undefined;
  /** Arrivals of the last two chunks: their gap is how long the final bytes were held. */
  prevChunk: number | undefined;
  lastChunk: number | undefined;
  end: number;
  error: string | undefined;
};

/** The clients of one node (base URL) in a cold run; times relative to the start of the run. */
export type NodeColdRun = {
  baseUrl: string;
  clients: number;
  ok: number;
  /** Earliest and latest first body byte of this node's clients (NaN when none got one). */
  firstByteMinMs: number;
  firstByteMaxMs: number;
  /** When this node's last client finished. */
  lastEndMs: number;
};

export type ColdRun = {
  clients: number;
  totalMs: number;
  /** Earliest first body byte, relative to the start of the run. */
  leaderTtfbMs: number;
  /** Latest first body byte minus the earliest: how long the slowest follower waited behind the leader. */
  maxFollowerDelayMs: number;
  /** Longest wait for the final chunk after the one before it (Gantry holds the last byte until the digest is verified and committed). */
  maxFinalChunkWaitMs: number;
  ok: number;
  failures: string[];
  /** Per base URL, in the order given (one entry with a single base URL). */
  perNode: NodeColdRun[];
};

/**
 * The figures of a cold run from its clients' results: client i went to baseUrls[i % n]. `t0` is
 * the run's start (performance.now()).
 */
export function summarizeCold(results: readonly ClientResult[], baseUrls: readonly string[], t0: number): ColdRun {
  const firstsOf = (rs: readonly ClientResult[]): number[] => rs.map((r) => r.firstByte).filter((t): t is number => t !== undefined);
  const firsts = firstsOf(results);
  const leader = firsts.length > 0 ? Math.min(...firsts) : NaN;
  const perNode = baseUrls.map((baseUrl, i): NodeColdRun => {
    const mine = results.filter((_, j) => j % baseUrls.length === i);
    const f = firstsOf(mine);
    return {
      baseUrl,
      clients: mine.length,
      ok: mine.filter((r) => r.error === undefined).length,
      firstByteMinMs: f.length > 0 ? Math.min(...f) - t0 : NaN,
      firstByteMaxMs: f.length > 0 ? Math.max(...f) - t0 : NaN,
      lastEndMs: mine.length > 0 ? Math.max(...mine.map((r) => r.end)) - t0 : NaN,
    };
  });
  return {
    clients: results.length,
    totalMs: Math.max(...results.map((r) => r.end)) - t0,
    leaderTtfbMs: leader - t0,
    maxFollowerDelayMs: firsts.length > 0 ? Math.max(...firsts) - leader : NaN,
    maxFinalChunkWaitMs: Math.max(...results.map((r) => (r.prevChunk === undefined || r.lastChunk === undefined ? 0 : r.lastChunk - r.prevChunk))),
    ok: results.filter((r) => r.error === undefined).length,
    failures: [...new Set(results.map((r) => r.error).filter((e): e is string => e !== undefined))],
    perNode,
  };
}

/**
 * Start `clients` GETs of the same blob at once, each on its own connection; read every body to
 * the end and check its sha256 against the digest. With several base URLs (the nodes of a
 * cluster), client i goes to baseUrl[i % n]: round-robin, as a load balancer would spread them.
 */
export async function coldFetchMany(baseUrl: string | readonly string[], path: string, digest: string, size: number, clients: number, timeoutMs: number): Promise<ColdRun> {
  const baseUrls = typeof baseUrl === 'string' ? [baseUrl] : [...baseUrl];
  if (baseUrls.length === 0) throw new Error('coldFetchMany: no base URL');
  const pools = baseUrls.map((u, i) => {
    const mine = Math.ceil((clients - i) / baseUrls.length);
    return new Pool(u, { connections: Math.max(1, mine), pipelining: 1, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  });
  const signal = AbortSignal.timeout(timeoutMs);
  const t0 = performance.now();
  try {
    const results = await Promise.all(
      Array.from({ length: clients }, async (_, i): Promise<ClientResult> => {
        const pool = pools[i % pools.length] as Pool;
        const r: ClientResult = { status: 0, bytes: 0, digestOk: false, start: performance.now(), firstByte: undefined, prevChunk: undefined, lastChunk: undefined, end: 0, error: undefined };
        try {
          const res = await pool.request({ path, method: 'GET', signal });
          r.status = res.statusCode;
          const h = createHash('sha256');
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            const now = performance.now();
            r.firstByte ??= now;
            r.prevChunk = r.lastChunk;
            r.lastChunk = now;
            h.update(chunk);
            r.bytes += chunk.length;
          }
          r.digestOk = `sha256:${h.digest('hex')}` === digest;
          if (r.status !== 200) r.error = `HTTP ${r.status}`;
          else if (r.bytes !== size) r.error = `got ${r.bytes} of ${size} bytes`;
          else if (!r.digestOk) r.error = 'body does not hash to the digest';
        } catch (err) {
          r.error = `${(err as Error).name}: ${(err as Error).message}`;
        }
        r.end = performance.now();
        return r;
      }),
    );
    return summarizeCold(results, baseUrls, t0);
  } finally {
    await Promise.all(pools.map((p) => p.destroy()));
  }
}

export type ColdArgs = { baseUrl: string | readonly string[]; path: string; digest: string; size: number; clients: number; timeoutMs: number };
export type WorkerJob = { kind: 'cold'; args: ColdArgs } | { kind: 'load'; args: LoadSpec };

async function inWorker<T>(job: WorkerJob): Promise<T> {
  const worker = new Worker(new URL('./worker.ts', import.meta.url), { workerData: job });
  try {
    return await new Promise<T>((resolve, reject) => {
      worker.once('message', (m: T) => resolve(m));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`bench worker exited with code ${code} before answering`)));
    });
  } finally {
    await worker.terminate();
  }
}

/** coldFetchMany on a worker thread (see worker.ts). */
export function coldFetchInWorker(args: ColdArgs): Promise<ColdRun> {
  return inWorker<ColdRun>({ kind: 'cold', args });
}

/** undiciLoad on a worker thread (see worker.ts). */
export function undiciLoadInWorker(spec: LoadSpec): Promise<LoadResult> {
  return inWorker<LoadResult>({ kind: 'load', args: spec });
}

// ---------------------------------------------------------------------------------------------
// Fixed-duration load at C connections

export type LoadResult = {
  tool: string;
  requestsPerSec: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  /** Non-200 answers, wrong body sizes, socket errors. */
  errors: number;
  /** Response bytes read during the measured run, headers and unfinished responses included (wrk's "MB read", 3 significant digits). */
  bytesRead?: number;
  /** Length of the measured run as wrk reports it. */
  runMs?: number;
  note?: string;
};

export type LoadSpec = {
  url: string;
  headers: Record<string, string>;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Expected body size, checked by the undici loop. */
  bodyBytes: number;
  /** wrk: a request not answered within this long is an error, and its latency is not recorded (default 5 s). */
  timeoutMs?: number;
};

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? NaN;
}

/** JavaScript load loop (run it with undiciLoadInWorker): a Pool of C connections, C workers, each request's body read to the end. */
export async function undiciLoad(spec: LoadSpec): Promise<LoadResult> {
  const u = new URL(spec.url);
  const pool = new Pool(u.origin, { connections: spec.connections, pipelining: 1, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const MAX_REQUESTS = 5_000_000; // bound even if the clock misbehaves
  const latencies = new Float64Array(1_000_000);
  let recorded = 0;
  let started = 0;
  let completedInWindow = 0;
  let errors = 0;
  const t0 = performance.now();
  const windowStart = t0 + spec.warmupMs;
  const windowEnd = windowStart + spec.durationMs;
  const path = u.pathname + u.search;
  const worker = async (): Promise<void> => {
    while (performance.now() < windowEnd && started < MAX_REQUESTS) {
      started += 1;
      const s = performance.now();
      let ok = false;
      try {
        const res = await pool.request({ path, method: 'GET', headers: spec.headers });
        let n = 0;
        for await (const chunk of res.body as AsyncIterable<Buffer>) n += chunk.length;
        ok = res.statusCode === 200 && n === spec.bodyBytes;
      } catch {
        ok = false;
      }
      const e = performance.now();
      if (e < windowStart || e > windowEnd) continue;
      if (!ok) {
        errors += 1;
        continue;
      }
      completedInWindow += 1;
      if (s >= windowStart && recorded < latencies.length) latencies[recorded++] = e - s;
    }
  };
  try {
    await Promise.all(Array.from({ length: spec.connections }, worker));
  } finally {
    await pool.destroy();
  }
  const sorted = latencies.subarray(0, recorded).sort();
  return {
    tool: `undici loop (${spec.connections} connections, worker thread)`,
    requestsPerSec: completedInWindow / (spec.durationMs / 1000),
    requests: completedInWindow,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    errors,
  };
}

export const WRK_BIN = ['/usr/bin/wrk', '/usr/local/bin/wrk'].find((p) => existsSync(p));
export const WRK_INSTALL_HINT = 'wrk not found: apt-get update && apt-get install -y wrk  (or pass --loadgen undici)';

function wrkMs(value: string, unit: string): number {
  const v = Number(value);
  switch (unit) {
    case 'us':
      return v / 1000;
    case 'ms':
      return v;
    case 's':
      return v * 1000;
    case 'm':
      return v * 60_000;
    default:
      return NaN;
  }
}

/** wrk -t<cores> -c<C>: a short warm-up run, then the measured one; parses req/s and the latency distribution. */
export async function wrkLoad(spec: LoadSpec, threads: number): Promise<LoadResult> {
  if (WRK_BIN === undefined) throw new Error(WRK_INSTALL_HINT);
  const t = Math.max(1, Math.min(threads, spec.connections));
  const timeoutS = Math.max(1, Math.ceil((spec.timeoutMs ?? 5000) / 1000));
  const common = [`-t${t}`, `-c${spec.connections}`, '--timeout', `${timeoutS}s`];
  for (const [k, v] of Object.entries(spec.headers)) common.push('-H', `${k}: ${v}`);
  const run = async (ms: number, latency: boolean): Promise<string> => {
    const secs = Math.max(1, Math.round(ms / 1000));
    const args = [...common, `-d${secs}s`, ...(latency ? ['--latency'] : []), spec.url];
    const { stdout } = await execFileP(WRK_BIN, args, { timeout: (secs + timeoutS) * 1000 + 20_000, maxBuffer: 1 << 20 });
    return stdout;
  };
  if (spec.warmupMs > 0) await run(spec.warmupMs, false);
  const out = await run(spec.durationMs, true);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read/.exec(out);
  const p = (q: string): number => {
    const m = new RegExp(`^\\s+${q}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? wrkMs(m[1] ?? '', m[2] ?? '') : NaN;
  };
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const sockErrors = sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0;
  if (!rps) throw new Error(`cannot parse wrk output:\n${out}`);
  return {
    tool: `wrk -t${t} -c${spec.connections}`,
    requestsPerSec: Number(rps[1]),
    requests: total ? Number(total[1]) : NaN,
    p50Ms: p('50'),
    p99Ms: p('99'),
    errors: (non2xx ? Number(non2xx[1]) : 0) + sockErrors,
    ...(total ? { runMs: wrkMs(total[2] ?? '', total[3] ?? ''), bytesRead: Number(total[4]) * 1024 ** ['B', 'KB', 'MB', 'GB', 'TB'].indexOf(total[5] ?? 'B') } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// curl and skopeo

/** One curl download to /dev/null, in bytes/s; checks status and size. */
export async function curlOnce(url: string, size: number): Promise<number> {
  const { stdout } = await execFileP(
    'curl',
    ['-s', '--noproxy', '*', '--max-time', '120', '-o', '/dev/null', '-w', '%{speed_download} %{http_code} %{size_download}', url],
    { timeout: 130_000 },
  );
  const [speed, code, got] = stdout.trim().split(' ');
  if (code !== '200' || Number(got) !== size) throw new Error(`curl ${url}: HTTP ${code}, ${got} of ${size} bytes`);
  return Number(speed);
}

export async function skopeoCopy(src: string, destDir: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  try {
    await execFileP(
      'skopeo',
      ['--insecure-policy', 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${src}`, `dir:${destDir}`],
      { timeout: timeoutMs, maxBuffer: 16 << 20, env: { ...process.env, NO_PROXY: '*', no_proxy: '*' } },
    );
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`skopeo copy ${src} failed: ${e.stderr?.trim() || e.message}`);
  }
  return performance.now() - t0;
}
