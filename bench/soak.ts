#!/usr/bin/env node
/**
 * Bounded soak run: does Gantry's memory or file-descriptor count creep under steady mixed load?
 *
 *   ./node_modules/.bin/node bench/soak.ts --seconds 60 --clients 16
 *
 * Starts a real docker-registry (filesystem storage) as the origin, pushes a set of images (small
 * layers and few-MiB layers), starts Gantry as its own process (`bin/gantry`, configured with
 * GANTRY_* variables, a cache budget smaller than the data so the LRU must evict), then runs N
 * clients for the given time, each looping over a weighted mix of
 *   warm pull    manifest (digest-checked) + every blob (sha256-checked)
 *   cold pull    a blob pushed to the origin during the run (a miss, sometimes coalesced)
 *   HEAD         manifest or blob: 200, Content-Length and Docker-Content-Digest as pushed
 *   range GET    a random slice of a layer: 206 and exactly those bytes
 * Every response is verified; any non-2xx, network error or mismatch is an error and is printed.
 * Gantry's VmRSS (/proc/PID/status) and open fds (/proc/PID/fd) are sampled every second.
 *
 * At the end: a per-second table, then the verdict (rule printed with it). Exit status 0 when there
 * were no errors and both RSS and fds are flat, 1 otherwise, 2 on bad arguments, 130 on Ctrl-C.
 * Everything binds to 127.0.0.1; every process and temp dir is removed at the end and on Ctrl-C.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Agent, request, type Dispatcher } from 'undici';
import { buildImage, makeLayer, MANIFEST_ACCEPT, pushBlob, pushImage, randomBlob, type BuiltImage } from '../test/fixtures/images.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../test/helpers/upstream-registry.ts';
import { startGantryProcess } from './procs.ts';

const MiB = 2 ** 20;
const REQUEST_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Options

const USAGE = `usage: node bench/soak.ts [--seconds N] [--clients N] [--max-cache-mib N] [--big-images N] [--small-images N] [--cold-per-second N]
  --seconds          length of the load phase (default 60, 10..3600)
  --clients          concurrent clients (default 16, 1..256)
  --max-cache-mib    GANTRY_MAX_CACHE_BYTES in MiB (default 16; the default images alone are ~23 MiB, and cold blobs keep coming, so the LRU evicts)
  --big-images       images with a few-MiB layer (default 6)
  --small-images     images with small layers only (default 10)
  --cold-per-second  new blobs pushed to the origin per second during the run (default 4)`;

type Options = { seconds: number; clients: number; maxCacheMiB: number; bigImages: number; smallImages: number; coldPerSecond: number };

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      seconds: { type: 'string' },
      clients: { type: 'string' },
      'max-cache-mib': { type: 'string' },
      'big-images': { type: 'string' },
      'small-images': { type: 'string' },
      'cold-per-second': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, def: number, min: number, max: number): number => {
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: expected an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
    return n;
  };
  return {
    seconds: int('seconds', values.seconds, 60, 10, 3600),
    clients: int('clients', values.clients, 16, 1, 256),
    maxCacheMiB: int('max-cache-mib', values['max-cache-mib'], 16, 8, 1 << 20),
    bigImages: int('big-images', values['big-images'], 6, 0, 100),
    smallImages: int('small-images', values['small-images'], 10, 1, 1000),
    coldPerSecond: int('cold-per-second', values['cold-per-second'], 4, 0, 100),
  };
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function fdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Load

type KnownBlob = { digest: string; size: number; bytes?: Buffer };
type Op = 'warm-pull' | 'cold-pull' | 'head' | 'range';
const OPS: Array<[Op, number]> = [
  ['warm-pull', 45],
  ['cold-pull', 15],
  ['head', 20],
  ['range', 20],
];

class Stats {
  requests = 0;
  errors = 0;
  bytes = 0;
  readonly byOp = new Map<Op, { ok: number; failed: number }>();
  readonly errorKinds = new Map<string, number>();
  readonly errorSamples: string[] = [];
  readonly xcache = new Map<string, number>();

  op(op: Op, ok: boolean): void {
    const s = this.byOp.get(op) ?? { ok: 0, failed: 0 };
    if (ok) s.ok++;
    else s.failed++;
    this.byOp.set(op, s);
  }

  error(kind: string, detail: string): void {
    this.errors++;
    this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
    if (this.errorSamples.length < 30) this.errorSamples.push(`${new Date().toISOString().slice(11, 23)} ${kind}: ${detail}`);
  }
}

class VerifyError extends Error {
  readonly kind: string;
  constructor(kind: string, message: string) {
    super(message);
    this.kind = kind;
  }
}

/** One GET/HEAD, body fully read and hashed; throws VerifyError on any non-2xx or network failure. */
async function fetchOnce(
  dispatcher: Dispatcher,
  stats: Stats,
  url: string,
  opts: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; signal: AbortSignal },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; digest: string; body: Buffer | undefined; size: number }> {
  const method = opts.method ?? 'GET';
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, { method, dispatcher, headers: opts.headers, signal: AbortSignal.any([opts.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]) });
  } catch (err) {
    stats.requests++;
    throw new VerifyError('network', `${method} ${url}: ${(err as Error).message}`);
  }
  const xc = res.headers['x-cache'];
  if (typeof xc === 'string') stats.xcache.set(xc, (stats.xcache.get(xc) ?? 0) + 1);
  const h = createHash('sha256');
  const keep: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      h.update(chunk);
      size += chunk.length;
      if (size <= 64 * 1024) keep.push(chunk); // small bodies (manifests, ranges) are kept for checks
    }
  } catch (err) {
    stats.requests++;
    throw new VerifyError('body-aborted', `${method} ${url}: status ${res.statusCode}, body cut after ${size} bytes: ${(err as Error).message}`);
  }
  stats.requests++;
  stats.bytes += size;
  if (res.statusCode < 200 || res.statusCode > 299) {
    const text = Buffer.concat(keep).toString('utf8').slice(0, 200);
    throw new VerifyError(`status-${res.statusCode}`, `${method} ${url} (${JSON.stringify(opts.headers ?? {})}): ${text}`);
  }
  return { status: res.statusCode, headers: res.headers, digest: `sha256:${h.digest('hex')}`, body: size <= 64 * 1024 ? Buffer.concat(keep) : undefined, size };
}

type World = {
  url: string;
  images: Array<{ repo: string; tag: string; image: BuiltImage }>;
  /** Every layer / config of the static images, with bytes (for range checks). */
  blobs: Array<{ repo: string; blob: KnownBlob }>;
  /** Blobs pushed during the run, newest last; `fetched` marks those some client already asked for. */
  cold: Array<{ blob: KnownBlob; fetched: boolean }>;
};

async function warmPull(w: World, d: Dispatcher, stats: Stats, rnd: () => number, signal: AbortSignal): Promise<void> {
  const { repo, tag, image } = w.images[Math.floor(rnd() * w.images.length)] ?? fail('no images');
  const byTag = rnd() < 0.5;
  const m = await fetchOnce(d, stats, `${w.url}/v2/${repo}/manifests/${byTag ? tag : image.manifestDigest}`, { headers: { accept: MANIFEST_ACCEPT }, signal });
  if (m.digest !== image.manifestDigest) throw new VerifyError('digest-mismatch', `manifest ${repo}:${tag}: got ${m.digest}, want ${image.manifestDigest}`);
  if (m.headers['docker-content-digest'] !== image.manifestDigest) throw new VerifyError('header-mismatch', `manifest ${repo}:${tag}: Docker-Content-Digest ${String(m.headers['docker-content-digest'])}`);
  for (const blob of image.blobs) {
    const b = await fetchOnce(d, stats, `${w.url}/v2/${repo}/blobs/${blob.digest}`, { signal });
    if (b.digest !== blob.digest || b.size !== blob.bytes.length) throw new VerifyError('digest-mismatch', `blob ${blob.digest}: got ${b.digest} (${b.size} bytes)`);
  }
}

async function coldPull(w: World, d: Dispatcher, stats: Stats, rnd: () => number, signal: AbortSignal): Promise<void> {
  // Prefer the newest blob nobody asked for yet (a miss); else a recent one (a hit, or a join of a running fill).
  let pick = [...w.cold].reverse().find((c) => !c.fetched);
  if (!pick) pick = w.cold[w.cold.length - 1 - Math.floor(rnd() * Math.min(8, w.cold.length))];
  if (!pick) return warmPull(w, d, stats, rnd, signal);
  pick.fetched = true;
  const b = await fetchOnce(d, stats, `${w.url}/v2/soak/cold/blobs/${pick.blob.digest}`, { signal });
  if (b.digest !== pick.blob.digest || b.size !== pick.blob.size) throw new VerifyError('digest-mismatch', `cold blob ${pick.blob.digest}: got ${b.digest} (${b.size} bytes)`);
}

async function head(w: World, d: Dispatcher, stats: Stats, rnd: () => number, signal: AbortSignal): Promise<void> {
  if (rnd() < 0.4) {
    const { repo, tag, image } = w.images[Math.floor(rnd() * w.images.length)] ?? fail('no images');
    const r = await fetchOnce(d, stats, `${w.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT }, signal });
    if (r.headers['docker-content-digest'] !== image.manifestDigest) throw new VerifyError('header-mismatch', `HEAD manifest ${repo}:${tag}: Docker-Content-Digest ${String(r.headers['docker-content-digest'])}`);
    if (Number(r.headers['content-length']) !== image.manifest.length) throw new VerifyError('header-mismatch', `HEAD manifest ${repo}:${tag}: Content-Length ${String(r.headers['content-length'])}, want ${image.manifest.length}`);
    return;
  }
  const { repo, blob } = w.blobs[Math.floor(rnd() * w.blobs.length)] ?? fail('no blobs');
  const r = await fetchOnce(d, stats, `${w.url}/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD', signal });
  if (r.headers['docker-content-digest'] !== blob.digest) throw new VerifyError('header-mismatch', `HEAD blob ${blob.digest}: Docker-Content-Digest ${String(r.headers['docker-content-digest'])}`);
  if (r.headers['content-length'] !== undefined && Number(r.headers['content-length']) !== blob.size) throw new VerifyError('header-mismatch', `HEAD blob ${blob.digest}: Content-Length ${String(r.headers['content-length'])}, want ${blob.size}`);
}

async function ranged(w: World, d: Dispatcher, stats: Stats, rnd: () => number, signal: AbortSignal): Promise<void> {
  const { repo, blob } = w.blobs[Math.floor(rnd() * w.blobs.length)] ?? fail('no blobs');
  const bytes = blob.bytes ?? fail('static blobs keep their bytes');
  const start = Math.floor(rnd() * blob.size);
  const len = 1 + Math.floor(rnd() * Math.min(64 * 1024, blob.size - start));
  const end = start + len - 1;
  const r = await fetchOnce(d, stats, `${w.url}/v2/${repo}/blobs/${blob.digest}`, { headers: { range: `bytes=${start}-${end}` }, signal });
  const want = bytes.subarray(start, end + 1);
  if (r.status !== 206) throw new VerifyError('range-status', `range ${start}-${end} of ${blob.digest}: status ${r.status}`);
  if (r.headers['content-range'] !== `bytes ${start}-${end}/${blob.size}`) throw new VerifyError('range-header', `range ${start}-${end}: Content-Range ${String(r.headers['content-range'])}`);
  if (!r.body || !r.body.equals(want)) throw new VerifyError('range-mismatch', `range ${start}-${end} of ${blob.digest}: ${r.size} bytes, sha256 ${r.digest}, want ${createHash('sha256').update(want).digest('hex')}`);
}

function fail(message: string): never {
  throw new Error(message);
}

/** Small seeded PRNG per client, so a run's mix is reproducible in shape. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pickOp(rnd: () => number): Op {
  const total = OPS.reduce((a, [, w]) => a + w, 0);
  let r = rnd() * total;
  for (const [op, weight] of OPS) {
    r -= weight;
    if (r < 0) return op;
  }
  return 'warm-pull';
}

// ---------------------------------------------------------------------------------------------
// Report

type Sample = { t: number; rssMiB: number | undefined; fds: number | undefined; reqs: number; errors: number };

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN;
}

const RSS_TOLERANCE = 0.15;
const FD_TOLERANCE = 10;

function verdict(samples: Sample[]): { lines: string[]; flat: boolean; judged: boolean } {
  const third = Math.floor(samples.length / 3);
  const middle = samples.slice(third, 2 * third);
  const last = samples.slice(2 * third);
  const rssMid = mean(middle.flatMap((s) => (s.rssMiB === undefined ? [] : [s.rssMiB])));
  const rssLast = mean(last.flatMap((s) => (s.rssMiB === undefined ? [] : [s.rssMiB])));
  const fdMid = mean(middle.flatMap((s) => (s.fds === undefined ? [] : [s.fds])));
  const fdLast = mean(last.flatMap((s) => (s.fds === undefined ? [] : [s.fds])));
  const enough = third >= 3 && Number.isFinite(rssMid) && Number.isFinite(rssLast) && Number.isFinite(fdMid) && Number.isFinite(fdLast);
  const rssFlat = enough && rssLast <= rssMid * (1 + RSS_TOLERANCE);
  const fdFlat = enough && fdLast <= fdMid + FD_TOLERANCE;
  const growth = ((rssLast / rssMid - 1) * 100).toFixed(1);
  return {
    flat: rssFlat && fdFlat,
    judged: enough,
    lines: [
      `rule: the samples are cut in thirds; the first third is warm-up (JIT, caches filling, eviction starting) and is ignored.`,
      `      RSS is flat if mean(last third) <= mean(middle third) x ${1 + RSS_TOLERANCE}; fds are flat if mean(last third) <= mean(middle third) + ${FD_TOLERANCE}.`,
      `      Only growth counts (a drop is not a leak). A leak shows as steady growth from the middle to the last third.`,
      enough
        ? `RSS: middle ${rssMid.toFixed(1)} MiB, last ${rssLast.toFixed(1)} MiB (${Number(growth) >= 0 ? '+' : ''}${growth}%) -> ${rssFlat ? 'FLAT' : 'GROWING'}`
        : `RSS: not enough samples (${samples.length}) to judge`,
      enough ? `fds: middle ${fdMid.toFixed(1)}, last ${fdLast.toFixed(1)} (${fdLast - fdMid >= 0 ? '+' : ''}${(fdLast - fdMid).toFixed(1)}) -> ${fdFlat ? 'FLAT' : 'GROWING'}` : 'fds: not enough samples',
    ],
  };
}

function metricSum(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/** `committed 120, upstream_error 1` from gantry_fills_total{outcome="..."}. */
function fillOutcomes(text: string): string {
  const parts: string[] = [];
  for (const m of text.matchAll(/^gantry_fills_total\{[^}]*outcome="([^"]+)"[^}]*\} (\S+)$/gm)) {
    if (Number(m[2]) > 0) parts.push(`${m[1]} ${m[2]}`);
  }
  return parts.join(', ') || 'none';
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }

  const stopAll = new AbortController();
  let interrupted = false;
  const onSignal = (sig: string): void => {
    if (interrupted) {
      console.error(`${sig} again: exiting without cleanup`);
      process.exit(130);
    }
    interrupted = true;
    console.error(`\n${sig}: stopping the load and cleaning up (press again to exit at once)`);
    stopAll.abort();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  };

  try {
    const t0 = performance.now();
    const log = (msg: string): void => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}`);
    log(`soak: ${opts.seconds} s, ${opts.clients} clients, cache budget ${opts.maxCacheMiB} MiB, ${opts.bigImages} big + ${opts.smallImages} small images, ${opts.coldPerSecond} cold blobs/s`);

    const registry: UpstreamRegistry = await startUpstreamRegistry({ storage: 'filesystem' });
    cleanups.push(() => registry.stop());
    log(`origin docker-registry at ${registry.url} (filesystem storage)`);

    // Images: small ones (two small layers), big ones (a 2-5 MiB layer of incompressible bytes + a small one).
    const images: World['images'] = [];
    for (let i = 0; i < opts.smallImages + opts.bigImages; i++) {
      if (stopAll.signal.aborted) return 130;
      const big = i >= opts.smallImages;
      const seed = `soak-${i}`;
      const layers = big
        ? [makeLayer({ 'data.bin': randomBlob((2 + (i % 4)) * MiB, seed).bytes }), makeLayer({ 'etc/id': `${seed}\n` })]
        : [makeLayer({ 'a.bin': randomBlob(8 * 1024 + i * 512, seed).bytes }), makeLayer({ 'etc/id': `${seed}\n` })];
      const image = buildImage({ format: i % 2 === 0 ? 'oci' : 'docker', layers, seed });
      const repo = big ? `soak/big${i}` : `soak/small${i}`;
      await pushImage(registry.url, repo, 'v1', image);
      images.push({ repo, tag: 'v1', image });
    }
    const blobs = images.flatMap(({ repo, image }) => image.blobs.map((b) => ({ repo, blob: { digest: b.digest, size: b.bytes.length, bytes: b.bytes } })));
    const totalMiB = blobs.reduce((a, b) => a + b.blob.size, 0) / MiB;
    log(`pushed ${images.length} images, ${blobs.length} blobs, ${totalMiB.toFixed(1)} MiB (cache budget ${opts.maxCacheMiB} MiB)`);

    const gantry = await startGantryProcess(registry.url, { GANTRY_MAX_CACHE_BYTES: String(opts.maxCacheMiB * MiB) });
    cleanups.push(() => gantry.stop());
    log(`gantry pid ${gantry.pid} at ${gantry.url} (bin/gantry, cache ${gantry.cacheDir})`);

    const world: World = { url: gantry.url, images, blobs, cold: [] };
    const stats = new Stats();
    const dispatcher = new Agent({ connections: opts.clients, pipelining: 1, keepAliveTimeout: 10_000, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS });
    cleanups.push(() => dispatcher.close());

    const loadEnd = new AbortController();
    const loadSignal = AbortSignal.any([stopAll.signal, loadEnd.signal]);

    // Cold blobs: pushed to the origin while the clients run.
    let coldSeq = 0;
    const pusher = (async () => {
      if (opts.coldPerSecond === 0) return;
      const interval = 1000 / opts.coldPerSecond;
      while (!loadSignal.aborted) {
        const started = performance.now();
        const size = 16 * 1024 + Math.floor(prng(coldSeq * 7919)() * 1.5 * MiB);
        const blob = randomBlob(size, `soak-cold-${coldSeq++}-${Date.now()}`);
        try {
          await pushBlob(registry.url, 'soak/cold', blob);
          world.cold.push({ blob: { digest: blob.digest, size }, fetched: false });
          if (world.cold.length > 64) world.cold.shift();
        } catch (err) {
          if (!loadSignal.aborted) stats.error('push', (err as Error).message);
        }
        const wait = interval - (performance.now() - started);
        if (wait > 0) await sleep(wait, undefined, { signal: loadSignal }).catch(() => undefined);
      }
    })();

    // Clients. The end of the load stops them between operations (an operation in progress finishes and is
    // verified, so Gantry never sees clients vanish mid-body); only Ctrl-C aborts requests in flight.
    const clients = Array.from({ length: opts.clients }, async (_, id) => {
      const rnd = prng(0x5eed + id);
      while (!loadSignal.aborted) {
        const op = pickOp(rnd);
        try {
          if (op === 'warm-pull') await warmPull(world, dispatcher, stats, rnd, stopAll.signal);
          else if (op === 'cold-pull') await coldPull(world, dispatcher, stats, rnd, stopAll.signal);
          else if (op === 'head') await head(world, dispatcher, stats, rnd, stopAll.signal);
          else await ranged(world, dispatcher, stats, rnd, stopAll.signal);
          stats.op(op, true);
        } catch (err) {
          if (stopAll.signal.aborted) break; // cut short by Ctrl-C, not a failure
          stats.op(op, false);
          if (err instanceof VerifyError) stats.error(err.kind, err.message);
          else stats.error('client', (err as Error).message);
          await sleep(50); // don't spin on a dead server
        }
      }
    });

    // Sampler: one row per second.
    const samples: Sample[] = [];
    let lastReqs = 0;
    let lastErrors = 0;
    log(`load: ${opts.seconds} s`);
    const loadStart = performance.now();
    for (let s = 1; s <= opts.seconds && !stopAll.signal.aborted; s++) {
      const due = loadStart + s * 1000;
      await sleep(Math.max(0, due - performance.now()), undefined, { signal: stopAll.signal }).catch(() => undefined);
      if (stopAll.signal.aborted) break;
      const rss = rssBytes(gantry.pid);
      const sample: Sample = { t: s, rssMiB: rss === undefined ? undefined : rss / MiB, fds: fdCount(gantry.pid), reqs: stats.requests - lastReqs, errors: stats.errors - lastErrors };
      lastReqs = stats.requests;
      lastErrors = stats.errors;
      samples.push(sample);
      const exit = gantry.exitInfo();
      if (exit) {
        stats.error('gantry-died', exit);
        break;
      }
    }
    loadEnd.abort();
    const loadSeconds = (performance.now() - loadStart) / 1000;
    const drained = await Promise.race([Promise.all([...clients, pusher]).then(() => true), sleep(REQUEST_TIMEOUT_MS + 5_000, false)]);

    let metricsText = '';
    try {
      const res = await request(`${gantry.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
      metricsText = await res.body.text();
    } catch {
      // reported below as missing figures
    }

    // Table.
    console.log('');
    console.log('   t    RSS MiB    fds    req/s   errors');
    for (const s of samples) {
      console.log(
        `${String(s.t).padStart(4)}  ${(s.rssMiB === undefined ? '-' : s.rssMiB.toFixed(1)).padStart(9)}  ${String(s.fds ?? '-').padStart(5)}  ${String(s.reqs).padStart(7)}  ${String(s.errors).padStart(7)}`,
      );
    }
    console.log('');
    const ops = [...stats.byOp].map(([op, s]) => `${op} ${s.ok}${s.failed ? ` (+${s.failed} failed)` : ''}`).join(', ');
    console.log(`requests: ${stats.requests} in ${loadSeconds.toFixed(1)} s (${Math.round(stats.requests / loadSeconds)}/s, counting those finishing after the end), ${(stats.bytes / MiB).toFixed(0)} MiB received; operations: ${ops}`);
    console.log(`X-Cache: ${[...stats.xcache].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}; cold blobs pushed during the run: ${coldSeq}`);
    if (metricsText) {
      console.log(
        `gantry metrics: evictions ${metricSum(metricsText, 'gantry_evictions_total')} (${(metricSum(metricsText, 'gantry_evicted_bytes_total') / MiB).toFixed(0)} MiB), ` +
          `cache ${(metricSum(metricsText, 'gantry_cache_bytes') / MiB).toFixed(1)} MiB in ${metricSum(metricsText, 'gantry_cache_entries')} entries, ` +
          `fills ${fillOutcomes(metricsText)}, in flight now ${metricSum(metricsText, 'gantry_inflight_fills')}`,
      );
    }
    if (!drained) console.log(`WARNING: clients still busy ${REQUEST_TIMEOUT_MS / 1000 + 5} s after the end of the load`);
    const notable = gantry.notable();
    if (notable.count > 0) {
      console.log(`gantry warnings/errors: ${notable.count}${notable.count > notable.lines.length ? ` (first ${notable.lines.length})` : ''}`);
      for (const l of notable.lines.slice(0, 10)) console.log(`  ${l.line}`);
    } else {
      console.log('gantry warnings/errors: none');
    }
    console.log(`errors: ${stats.errors}${stats.errors ? ` (${[...stats.errorKinds].map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`);
    for (const e of stats.errorSamples) console.log(`  ${e.length > 400 ? `${e.slice(0, 400)}…` : e}`);

    const v = verdict(samples);
    console.log('');
    for (const l of v.lines) console.log(l);
    const ok = v.flat && stats.errors === 0 && !interrupted;
    const shape = !v.judged ? 'RSS and fds not judged' : v.flat ? 'RSS and fds flat' : 'RSS or fds growing';
    console.log(`verdict: ${interrupted ? 'INTERRUPTED' : ok ? 'PASS' : 'FAIL'} (${shape}, ${stats.errors} errors)`);
    return interrupted ? 130 : ok ? 0 : 1;
  } finally {
    await cleanup();
  }
}

process.exitCode = await main();
