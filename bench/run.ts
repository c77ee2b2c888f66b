#!/usr/bin/env node
/**
 * Gantry vs Debian's docker-registry (distribution 2.8, proxy mode) on loopback.
 *
 *   origin docker-registry ──┬── forwarder A (WAN: bandwidth + latency, counted) ── Gantry (own process)
 *                            └── forwarder B (same settings, counted)            ── docker-registry proxy
 *
 * Every scenario runs on Gantry then on the baseline, never both at once. See bench/README.md.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { MANIFEST_ACCEPT, buildImage, makeTar, pushBlob, pushImage, randomBlob } from '../test/fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../test/helpers/counting-forwarder.ts';
import { startUpstreamRegistry } from '../test/helpers/upstream-registry.ts';
import { WRK_BIN, WRK_INSTALL_HINT, coldFetchInWorker, curlOnce, skopeoCopy, undiciLoadInWorker, wrkLoad, type ColdRun, type LoadResult, type LoadSpec } from './load.ts';
import { USAGE, UsageError, parseOptions, type BenchOptions } from './options.ts';
import { runBench, guardRun, CpuMeter, NODE_BIN, REGISTRY_BIN, REPO_ROOT, TreeMemorySampler, describeTreeMemory, mib, readTreeMemory, startBaselineProxy, startGantryProcess, waitForIdle, type MirrorProcess } from './procs.ts';
import { fmt, renderTable, renderProblems, type Row } from './report.ts';

type Key = 'gantry' | 'baseline';
type Mirror = { key: Key; proc: MirrorProcess; fwd: CountingForwarder };
type Both<T> = Record<Key, T>;
type BlobRef = { digest: string; size: number };

const KEYS: readonly Key[] = ['gantry', 'baseline'];
const MiB = 2 ** 20;

/** Time to sha256 `n` bodies of `bytes` in 64 KiB chunks on this thread, as the bench's client thread does. */
function hashFloorMs(n: number, bytes: number): number {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const hashes = Array.from({ length: n }, () => createHash('sha256'));
  const t0 = performance.now();
  for (let done = 0; done < bytes; done += chunk.length) for (const h of hashes) h.update(chunk);
  for (const h of hashes) h.digest();
  return performance.now() - t0;
}

const log = (s = ''): void => {
  process.stdout.write(`${s}\n`);
};

function versionOf(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]?.trim() ?? '?';
  } catch {
    return 'not found';
  }
}

function gitDirtySrc(): string {
  try {
    const out = execFileSync('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    const files = out.split('\n').filter((l) => l.trim() !== '').map((l) => l.slice(3));
    return files.length > 0 ? ` (uncommitted changes in ${files.join(', ')})` : '';
  } catch {
    return '';
  }
}

/** Wait until the forwarder has no open request (a mirror may keep filling after its clients are done). */
async function settle(fwd: CountingForwarder, maxMs: number): Promise<boolean> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    await sleep(250);
    if (fwd.requests.every((r) => r.done)) return true;
    if (Date.now() > deadline) return false;
  }
}

type Upstream = { requests: number; blobGets: number; bytes: number; settled: boolean };

async function upstreamAfter(fwd: CountingForwarder, maxMs: number): Promise<Upstream> {
  const settled = await settle(fwd, maxMs);
  return {
    requests: fwd.requests.length,
    blobGets: fwd.count({ method: 'GET', pathIncludes: '/blobs/' }),
    bytes: fwd.bytesOut(),
    settled,
  };
}

/** `msg: err` of a pino line, or `msg` of a logrus line, else the line itself. */
function summarizeLogLine(text: string): string {
  try {
    const rec = JSON.parse(text) as Record<string, unknown>;
    return [rec['msg'], rec['err']].filter((v) => typeof v === 'string').join(': ') || text.slice(0, 200);
  } catch {
    const m = /msg="((?:[^"\\]|\\.)*)"/.exec(text);
    return m?.[1] ?? text.slice(0, 200);
  }
}

async function main(opts: BenchOptions): Promise<number> {
  const problems: string[] = [];
  let failed = false;
  // Whole-run deadline, scaled with the data the baseline will pull (it fetches once per client).
  const baselineBytes = opts.blobBytes * (4 + opts.clients.reduce((s, n) => s + n + 1, 0)) + opts.imageBytes * 2;
  const guard = guardRun(Math.ceil(Math.max(opts.deadlineMs, (baselineBytes / opts.bandwidth) * 3000 + 5 * 60_000)));

  const loadgen = opts.loadgen === 'auto' ? (WRK_BIN !== undefined ? 'wrk' : 'undici') : opts.loadgen;
  if (loadgen === 'wrk' && WRK_BIN === undefined) throw new UsageError(WRK_INSTALL_HINT);

  // ---------------------------------------------------------------- settings
  const cmdline = [path.relative(process.cwd(), process.argv[0] ?? 'node') || 'node', ...process.argv.slice(1).map((a) => (path.isAbsolute(a) ? path.relative(process.cwd(), a) : a))].join(' ');
  log(`# Gantry benchmark${opts.quick ? ' (--quick)' : ''}`);
  log(`command:     ${cmdline}`);
  log(`date:        ${new Date().toISOString()}`);
  log(`gantry src:  ${versionOf('git', ['-C', REPO_ROOT, 'describe', '--always', '--dirty'])}${gitDirtySrc()}`);
  log(`load avg:    ${loadavg().map((v) => v.toFixed(2)).join(' ')} (before start)`);
  log(`machine:     ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
  log(`baseline:    ${versionOf(REGISTRY_BIN, ['--version'])}, proxy mode, filesystem storage`);
  log(`clients:     undici (cold runs), ${versionOf('curl', ['--version']).split(' ').slice(0, 2).join(' ')}, ${versionOf('skopeo', ['--version'])}`);
  log(`WAN:         ${(opts.bandwidth / 1e6).toFixed(1)} MB/s (${(opts.bandwidth / MiB).toFixed(1)} MiB/s) per mirror forwarder, shared by its connections; +${opts.latencyMs} ms per request`);
  log(`sizes:       blobs ${mib(opts.blobBytes)}, cold clients 1,${opts.clients.join(',')}; image ${mib(opts.imageBytes)} in ${opts.layers} layers; small blob ${mib(opts.smallBlobBytes)}`);
  log(`req/s runs:  ${opts.connections} connections, ${opts.warmupMs / 1000} s warm-up + ${opts.durationMs / 1000} s measured, best of ${opts.rounds} alternating rounds; load generator: ${loadgen === 'wrk' ? `wrk (${WRK_BIN})` : 'undici loop on a worker thread'}`);
  if (loadgen === 'undici') log(`             note: ${opts.loadgen === 'auto' ? `${WRK_INSTALL_HINT}; ` : ''}the undici loop is JavaScript and costs more CPU than wrk on the cores the mirror also needs: req/s is a lower bound`);
  else log('             note: wrk shares the machine\'s cores with the mirror under test');
  log('');

  if (opts.waitIdleMs > 0) {
    const w = await waitForIdle(opts.waitIdleMs, 0.15);
    log(`wait-idle:   ${w.idle ? 'machine idle' : `still busy after ${opts.waitIdleMs / 1000} s`} (other processes ${w.other.toFixed(2)} cores)`);
  }
  try {
    // ---------------------------------------------------------------- topology
    const origin = await startUpstreamRegistry({ storage: 'filesystem' });
    guard.defer(() => origin.stop());
    const fwdOpts = { target: origin.url, bytesPerSecond: opts.bandwidth, latencyMs: opts.latencyMs };
    const fwdG = await startCountingForwarder(fwdOpts);
    guard.defer(() => fwdG.stop());
    const fwdB = await startCountingForwarder(fwdOpts);
    guard.defer(() => fwdB.stop());
    const gantry = await startGantryProcess(fwdG.url);
    guard.defer(() => gantry.stop());
    const baseline = await startBaselineProxy(fwdB.url);
    guard.defer(() => baseline.stop());
    const mirrors: Both<Mirror> = {
      gantry: { key: 'gantry', proc: gantry, fwd: fwdG },
      baseline: { key: 'baseline', proc: baseline, fwd: fwdB },
    };
    log(`origin:      docker-registry ${origin.url} (filesystem)`);
    log(`gantry:      pid ${gantry.pid} ${gantry.url}: GANTRY_LISTEN=${gantry.host} GANTRY_CACHE_DIR=<tmp> GANTRY_UPSTREAM_URL=${fwdG.url} GANTRY_LOG_LEVEL=warn ${path.relative(REPO_ROOT, NODE_BIN)} src/main.ts`);
    log(`baseline:    pid ${baseline.pid} ${baseline.url}: ${REGISTRY_BIN} serve <tmp>/config.yml (proxy.remoteurl ${fwdB.url})`);
    log('');

    const checkAlive = (): void => {
      for (const k of KEYS) {
        const info = mirrors[k].proc.exitInfo();
        if (info !== undefined) throw new Error(info);
      }
    };

    // ---------------------------------------------------------------- data
    const t0 = performance.now();
    const push = async (repo: string, seed: string, size: number): Promise<BlobRef> => {
      const blob = randomBlob(size, `gantry-bench-${seed}-${size}`);
      await pushBlob(origin.url, repo, blob);
      return { digest: blob.digest, size };
    };
    const small = await push('bench/small', 'small', opts.smallBlobBytes);
    const big1 = await push('bench/big', 'cold-1', opts.blobBytes);
    const bigN = new Map<number, BlobRef>();
    for (const n of opts.clients) bigN.set(n, await push('bench/big', `cold-${n}`, opts.blobBytes));
    const layerSize = Math.floor(opts.imageBytes / opts.layers);
    const layers: Buffer[] = [];
    for (let i = 0; i < opts.layers; i++) {
      // Stored (level 0) gzip of random bytes: a valid layer, built fast, incompressible on the wire.
      layers.push(gzipSync(makeTar({ [`layer-${i}.bin`]: randomBlob(layerSize - 2048, `gantry-bench-layer-${i}-${layerSize}`).bytes }), { level: 0 }));
    }
    const image = buildImage({ format: 'oci', layers, seed: `bench-${opts.imageBytes}` });
    layers.length = 0;
    await pushImage(origin.url, 'bench/image', 'v1', image);
    const imageBytes = image.manifest.length + image.blobs.reduce((s, b) => s + b.bytes.length, 0);
    const manifestDigest = image.manifestDigest;
    const manifestSize = image.manifest.length;
    log(`data:        pushed to origin in ${((performance.now() - t0) / 1000).toFixed(1)} s: bench/big (${1 + opts.clients.length} blobs), bench/small, bench/image:v1 (${image.blobs.length} blobs, ${mib(imageBytes)} with manifest)`);

    // Warm-up: one cold 1 MiB fetch per mirror (connections, JIT, distribution's auth ping); it also
    // makes the small blob warm for scenario 3.
    for (const k of KEYS) {
      const m = mirrors[k];
      const r = await coldFetchInWorker({ baseUrl: m.proc.url, path: `/v2/bench/small/blobs/${small.digest}`, digest: small.digest, size: small.size, clients: 1, timeoutMs: 30_000 });
      if (r.ok !== 1) throw new Error(`${k}: warm-up fetch failed: ${r.failures.join('; ')}`);
      await settle(m.fwd, 15_000);
    }
    // Memory of each mirror's whole process tree (Gantry's workers, if any, included): PSS summed.
    const idleMem = { gantry: readTreeMemory(gantry.pid), baseline: readTreeMemory(baseline.pid) };
    const idlePss: Both<number> = { gantry: idleMem.gantry?.pssBytes ?? NaN, baseline: idleMem.baseline?.pssBytes ?? NaN };
    log(`idle memory: gantry ${describeTreeMemory(idleMem.gantry)}, baseline ${describeTreeMemory(idleMem.baseline)} (after warm-up)`);
    log('');

    const phases: Array<{ name: string; at: number }> = [{ name: 'start-up and warm-up', at: 0 }];
    const phase = (name: string): void => {
      phases.push({ name, at: Date.now() });
      log(name);
    };
    const rows: Row[] = [];
    const both = <T>(f: (m: Mirror) => T): Both<T> => ({ gantry: f(mirrors.gantry), baseline: f(mirrors.baseline) });
    // Other sessions may share this machine: measure the CPU that neither the bench nor its children used.
    let meter = new CpuMeter();
    const mark = (k: Key): void => {
      meter = new CpuMeter(mirrors[k].proc.pid);
    };
    const otherLoad: Array<{ phase: string; cores: number }> = [];
    const line = (k: Key, text: string): void => {
      const cpu = meter.read();
      otherLoad.push({ phase: (/^\[\d\]/.exec(phases.at(-1)?.name ?? '')?.[0] ?? '?') + ` ${k}`, cores: cpu.other });
      log(`    ${k.padEnd(9)} ${text}  {cores: ${k} ${cpu.proc.toFixed(2)} (${cpu.processes} proc), bench+origin+clients ${cpu.own.toFixed(2)}, others ${cpu.other.toFixed(2)}}`);
    };
    const coldTimeout = (fetches: number): number => Math.ceil(((fetches + 2) * opts.blobBytes / opts.bandwidth) * 3000 + 60_000);
    const noteFailures = (what: string, k: Key, r: ColdRun): void => {
      if (r.failures.length === 0) return;
      failed = true;
      problems.push(`${what} on ${k}: ${r.clients - r.ok} of ${r.clients} clients failed: ${r.failures.join('; ')}`);
    };
    const noteUnsettled = (what: string, k: Key, u: Upstream): void => {
      if (!u.settled) problems.push(`${what} on ${k}: upstream requests still open when counted`);
    };

    // ---------------------------------------------------------------- 1. cold blob
    phase(`[1] cold ${mib(opts.blobBytes)} blob, 1 client`);
    const cold1 = {} as Both<{ run: ColdRun; up: Upstream }>;
    for (const k of KEYS) {
      const m = mirrors[k];
      m.fwd.reset();
      mark(k);
      const run = await coldFetchInWorker({ baseUrl: m.proc.url, path: `/v2/bench/big/blobs/${big1.digest}`, digest: big1.digest, size: big1.size, clients: 1, timeoutMs: coldTimeout(2) });
      const up = await upstreamAfter(m.fwd, coldTimeout(2));
      checkAlive();
      noteFailures('cold 1 client', k, run);
      noteUnsettled('cold 1 client', k, up);
      cold1[k] = { run, up };
      line(k, `${fmt.seconds(run.totalMs)}  first byte ${fmt.ms(run.leaderTtfbMs)}  final-chunk wait ${fmt.ms(run.maxFinalChunkWaitMs)}  upstream blob GETs ${up.blobGets}  upstream bytes ratio ${fmt.ratio(up.bytes / big1.size)}`);
    }
    rows.push({ section: '1', figure: 'cold blob, 1 client: time', ...both((m) => cold1[m.key].run.totalMs), format: fmt.seconds, target: '', pass: undefined });
    rows.push({ section: '1', figure: 'cold blob, 1 client: upstream bytes ratio', ...both((m) => cold1[m.key].up.bytes / big1.size), format: fmt.ratio, target: '', pass: undefined });

    const maxN = opts.clients[opts.clients.length - 1] ?? 0;
    const coldN = new Map<number, Both<{ run: ColdRun; up: Upstream; peakPss: number; memMethod: string }>>();
    for (const n of opts.clients) {
      const blob = bigN.get(n);
      if (blob === undefined) continue;
      phase(`[1] cold ${mib(opts.blobBytes)} blob (another one), ${n} concurrent clients`);
      const res = {} as Both<{ run: ColdRun; up: Upstream; peakPss: number; memMethod: string }>;
      for (const k of KEYS) {
        const m = mirrors[k];
        m.fwd.reset();
        mark(k);
        const sampler = new TreeMemorySampler(m.proc.pid, 25);
        const run = await coldFetchInWorker({ baseUrl: m.proc.url, path: `/v2/bench/big/blobs/${blob.digest}`, digest: blob.digest, size: blob.size, clients: n, timeoutMs: coldTimeout(n + 1) });
        const up = await upstreamAfter(m.fwd, coldTimeout(n + 1));
        const mem = sampler.stop();
        checkAlive();
        noteFailures(`cold ${n} clients`, k, run);
        noteUnsettled(`cold ${n} clients`, k, up);
        res[k] = { run, up, peakPss: mem.peakBytes, memMethod: mem.method };
        line(
          k,
          `${fmt.seconds(run.totalMs)} (${fmt.times(run.totalMs / cold1[k].run.totalMs)} of 1 client)  ok ${run.ok}/${n}  leader first byte ${fmt.ms(run.leaderTtfbMs)}  ` +
            `max follower delay ${fmt.ms(run.maxFollowerDelayMs)}  max final-chunk wait ${fmt.ms(run.maxFinalChunkWaitMs)}  upstream blob GETs ${up.blobGets}  bytes ratio ${fmt.ratio(up.bytes / blob.size)}  peak PSS ${fmt.mib(mem.peakBytes)} (${mem.method}; peak RSS sum ${fmt.mib(mem.peakRssBytes)})`,
        );
      }
      coldN.set(n, res);
      rows.push({ section: '1', figure: `cold blob, ${n} clients: time`, ...both((m) => res[m.key].run.totalMs), format: fmt.seconds, target: '', pass: undefined });
      if (n === maxN) {
        const g = res.gantry.run.totalMs / cold1.gantry.run.totalMs;
        rows.push({
          section: '1', figure: `cold blob, ${n} clients: time / 1-client time`,
          ...both((m) => res[m.key].run.totalMs / cold1[m.key].run.totalMs), format: fmt.times, target: '< 2x', pass: g < 2,
        });
      }
      rows.push({ section: '1', figure: `cold blob, ${n} clients: upstream blob GETs`, ...both((m) => res[m.key].up.blobGets), format: fmt.count, target: '1', pass: res.gantry.up.blobGets === 1 });
      const ratioG = res.gantry.up.bytes / blob.size;
      rows.push({ section: '1', figure: `cold blob, ${n} clients: upstream bytes ratio`, ...both((m) => res[m.key].up.bytes / blob.size), format: fmt.ratio, target: '1.00', pass: ratioG <= 1.005 });
      rows.push({
        section: '1', figure: `cold blob, ${n} clients: max follower first-byte delay`,
        ...both((m) => res[m.key].run.maxFollowerDelayMs), format: fmt.ms, target: '< 100 ms', pass: res.gantry.run.maxFollowerDelayMs < 100,
      });
      if (n === maxN) {
        rows.push({ section: '1', figure: 'PSS of the process tree after warm-up (idle, for reference)', ...idlePss, format: fmt.mib, target: '', pass: undefined });
        rows.push({ section: '1', figure: `cold blob, ${n} clients: peak PSS of the process tree`, ...both((m) => res[m.key].peakPss), format: fmt.mib, target: '< 200 MiB', pass: res.gantry.peakPss < 200 * MiB });
      }
    }
    // Floors for the N-client time. The clients verify every body on one thread, so hashing N bodies
    // bounds the run from below whatever the mirror does; and the same N clients on the blob once it
    // is cached show the run with no upstream to wait for.
    const floorBlob = bigN.get(maxN);
    if (floorBlob !== undefined && maxN > 1) {
      phase(`[1] floors for ${maxN} clients: hashing ${maxN} bodies on the clients' thread; the same clients on the now-cached blob`);
      const hashMs = hashFloorMs(maxN, opts.blobBytes);
      log(`    clients   sha256 of ${maxN} x ${mib(opts.blobBytes)} on one thread, no I/O: ${fmt.seconds(hashMs)} (${fmt.times(hashMs / cold1.gantry.run.totalMs)} of Gantry's 1-client cold time)`);
      const warmN = {} as Both<number>;
      for (const k of KEYS) {
        const m = mirrors[k];
        m.fwd.reset();
        mark(k);
        const run = await coldFetchInWorker({ baseUrl: m.proc.url, path: `/v2/bench/big/blobs/${floorBlob.digest}`, digest: floorBlob.digest, size: floorBlob.size, clients: maxN, timeoutMs: coldTimeout(maxN + 1) });
        const up = await upstreamAfter(m.fwd, coldTimeout(maxN + 1));
        checkAlive();
        noteFailures(`warm ${maxN} clients`, k, run);
        warmN[k] = run.totalMs;
        line(k, `${fmt.seconds(run.totalMs)} (${fmt.times(run.totalMs / cold1[k].run.totalMs)} of its 1-client cold time)  ok ${run.ok}/${maxN}  upstream blob GETs ${up.blobGets}`);
      }
      rows.push({ section: '1', figure: `floor: hashing ${maxN} bodies / 1-client time`, gantry: hashMs / cold1.gantry.run.totalMs, baseline: hashMs / cold1.baseline.run.totalMs, format: fmt.times, target: '', pass: undefined });
      rows.push({ section: '1', figure: `floor: ${maxN} clients, cached blob / 1-client time`, ...both((m) => warmN[m.key] / cold1[m.key].run.totalMs), format: fmt.times, target: '', pass: undefined });
    }
    log('');

    // ---------------------------------------------------------------- 5. cold image pull (run now, while cold)
    phase(`[5] cold image pull with skopeo: bench/image:v1, ${image.blobs.length - 1} layers + config, ${mib(imageBytes)}`);
    const pull = {} as Both<{ ms: number; up: Upstream }>;
    for (const k of KEYS) {
      const m = mirrors[k];
      m.fwd.reset();
      mark(k);
      const dest = await mkdtemp(path.join(tmpdir(), 'gantry-bench-pull-'));
      try {
        const timeout = Math.ceil((imageBytes * 3 / opts.bandwidth) * 3000 + 120_000);
        const ms = await skopeoCopy(`${m.proc.host}/bench/image:v1`, dest, timeout);
        const up = await upstreamAfter(m.fwd, timeout);
        checkAlive();
        noteUnsettled('image pull', k, up);
        pull[k] = { ms, up };
        line(k, `${fmt.seconds(ms)}  upstream requests ${up.requests} (blob GETs ${up.blobGets})  upstream bytes ratio ${fmt.ratio(up.bytes / imageBytes)}`);
      } catch (err) {
        failed = true;
        problems.push(`image pull on ${k}: ${(err as Error).message}`);
        pull[k] = { ms: NaN, up: { requests: NaN, blobGets: NaN, bytes: NaN, settled: true } };
        line(k, `FAILED: ${(err as Error).message}`);
      } finally {
        await rm(dest, { recursive: true, force: true });
      }
    }
    rows.push({ section: '5', figure: 'cold image pull: time', ...both((m) => pull[m.key].ms), format: fmt.seconds, target: '', pass: undefined });
    rows.push({ section: '5', figure: 'cold image pull: upstream requests', ...both((m) => pull[m.key].up.requests), format: fmt.count, target: '', pass: undefined });
    const pullRatioG = pull.gantry.up.bytes / imageBytes;
    rows.push({
      section: '5', figure: 'cold image pull: upstream bytes ratio', ...both((m) => pull[m.key].up.bytes / imageBytes),
      format: fmt.ratio, target: '1.00', pass: Number.isFinite(pullRatioG) ? pullRatioG <= 1.005 : false,
    });
    log('');

    // ---------------------------------------------------------------- 2. warm big blob with curl
    // Warm runs alternate gantry, baseline, gantry, ... and keep each mirror's best, so a burst of
    // load from elsewhere on the machine does not land on one mirror only.
    phase(`[2] warm ${mib(opts.blobBytes)} blob, 1 client, curl, best of ${opts.curlRuns} (alternating)`);
    const warmRuns: Both<number[]> = { gantry: [], baseline: [] };
    for (let round = 0; round < opts.curlRuns; round++) {
      for (const k of KEYS) {
        const m = mirrors[k];
        m.fwd.reset();
        mark(k);
        try {
          const bps = await curlOnce(`${m.proc.url}/v2/bench/big/blobs/${big1.digest}`, big1.size);
          warmRuns[k].push(bps);
          line(k, `run ${round + 1}: ${fmt.mibps(bps)}`);
        } catch (err) {
          failed = true;
          problems.push(`warm blob on ${k}: ${(err as Error).message}`);
          line(k, `run ${round + 1}: FAILED: ${(err as Error).message}`);
        }
        const up = await upstreamAfter(m.fwd, 10_000);
        if (up.blobGets > 0) problems.push(`warm blob on ${k}: ${up.blobGets} upstream blob GETs (expected none)`);
        checkAlive();
      }
    }
    const warm = both((m) => (warmRuns[m.key].length > 0 ? Math.max(...warmRuns[m.key]) : NaN));
    for (const k of KEYS) log(`    ${k.padEnd(9)} best ${fmt.mibps(warm[k])}`);
    rows.push({ section: '2', figure: 'warm blob, curl: throughput', ...warm, format: fmt.mibps, target: '>= 0.95x baseline', pass: warm.gantry >= 0.95 * warm.baseline });
    log('');

    // ---------------------------------------------------------------- 3/4. req/s
    const loadRun = async (spec: LoadSpec): Promise<LoadResult> =>
      loadgen === 'wrk' ? wrkLoad(spec, cpus().length) : undiciLoadInWorker(spec);
    /** `rounds` alternating runs per mirror; keeps each mirror's run with the highest req/s. */
    const bestOf = async (what: string, spec: (m: Mirror) => LoadSpec, describe: (r: LoadResult) => string, expectUpstream: boolean): Promise<Both<LoadResult>> => {
      const best = {} as Partial<Both<LoadResult>>;
      for (let round = 0; round < opts.rounds; round++) {
        for (const k of KEYS) {
          const m = mirrors[k];
          await settle(m.fwd, 10_000);
          m.fwd.reset();
          mark(k);
          const r = await loadRun(spec(m));
          const up = await upstreamAfter(m.fwd, 10_000);
          line(k, `run ${round + 1}: ${describe(r)}  upstream requests ${up.requests}  [${r.tool}]`);
          if (r.errors > 0) problems.push(`${what} on ${k}: ${r.errors} errors in run ${round + 1}`);
          if (!expectUpstream && up.requests > 0) problems.push(`${what} on ${k}: ${up.requests} upstream requests during a warm run (expected none)`);
          checkAlive();
          const prev = best[k];
          if (prev === undefined || r.requestsPerSec > prev.requestsPerSec) best[k] = r;
        }
      }
      const out = best as Both<LoadResult>;
      for (const k of KEYS) log(`    ${k.padEnd(9)} best ${describe(out[k])}`);
      return out;
    };

    phase(`[3] warm ${mib(small.size)} blob, ${opts.connections} connections, best of ${opts.rounds} (alternating)`);
    const smallRes = await bestOf(
      '1 MiB blob load',
      (m) => ({ url: `${m.proc.url}/v2/bench/small/blobs/${small.digest}`, headers: {}, connections: opts.connections, warmupMs: opts.warmupMs, durationMs: opts.durationMs, bodyBytes: small.size }),
      (r) => `${fmt.rps(r.requestsPerSec)} (${fmt.mibps(r.requestsPerSec * small.size)})  p50 ${fmt.ms(r.p50Ms)}  p99 ${fmt.ms(r.p99Ms)}  errors ${r.errors}`,
      false,
    );
    rows.push({ section: '3', figure: `warm 1 MiB blob, ${opts.connections} conns: req/s`, ...both((m) => smallRes[m.key].requestsPerSec), format: fmt.rps, target: '>= 3x baseline', pass: smallRes.gantry.requestsPerSec >= 3 * smallRes.baseline.requestsPerSec });
    log('');

    phase(`[4] warm manifest by digest (${manifestSize} bytes), ${opts.connections} connections, best of ${opts.rounds} (alternating)`);
    const manifestUrl = (m: Mirror): string => `${m.proc.url}/v2/bench/image/manifests/${manifestDigest}`;
    for (const k of KEYS) {
      // Make sure it is cached (skopeo pulled it by tag) and answers with the right bytes.
      const pre = await fetch(manifestUrl(mirrors[k]), { headers: { accept: MANIFEST_ACCEPT }, signal: AbortSignal.timeout(30_000) });
      const body = Buffer.from(await pre.arrayBuffer());
      if (pre.status !== 200 || !body.equals(image.manifest)) {
        failed = true;
        problems.push(`manifest by digest on ${k}: HTTP ${pre.status}, ${body.length} bytes, ${body.equals(image.manifest) ? 'same' : 'different'} bytes`);
      }
    }
    const manRes = await bestOf(
      'manifest load',
      (m) => ({ url: manifestUrl(m), headers: { Accept: MANIFEST_ACCEPT }, connections: opts.connections, warmupMs: opts.warmupMs, durationMs: opts.durationMs, bodyBytes: manifestSize }),
      (r) => `${fmt.rps(r.requestsPerSec)}  p50 ${fmt.ms(r.p50Ms)}  p99 ${fmt.ms(r.p99Ms)}  errors ${r.errors}`,
      false,
    );
    rows.push({ section: '4', figure: `manifest by digest, ${opts.connections} conns: req/s`, ...both((m) => manRes[m.key].requestsPerSec), format: fmt.rps, target: '>= 10x baseline', pass: manRes.gantry.requestsPerSec >= 10 * manRes.baseline.requestsPerSec });
    rows.push({ section: '4', figure: 'manifest by digest: p50 latency', ...both((m) => manRes[m.key].p50Ms), format: fmt.ms, target: '', pass: undefined });
    rows.push({ section: '4', figure: 'manifest by digest: p99 latency', ...both((m) => manRes[m.key].p99Ms), format: fmt.ms, target: '< 20 ms', pass: manRes.gantry.p99Ms < 20 });
    log('');

    // ---------------------------------------------------------------- summary
    const endMem = both((m) => readTreeMemory(m.proc.pid));
    rows.sort((a, b) => a.section.localeCompare(b.section)); // stable: keeps each section's order
    log('## Summary (g/b = gantry / baseline; verdicts judge Gantry against the issue\'s targets)');
    log('');
    log(renderTable(rows));
    log('');
    const passes = rows.filter((r) => r.pass === true).length;
    const misses = rows.filter((r) => r.pass === false);
    log(`targets: ${passes} PASS, ${misses.length} MISS${misses.length > 0 ? `: ${misses.map((r) => r.figure).join('; ')}` : ''}`);
    log(`memory after all runs: gantry ${describeTreeMemory(endMem.gantry)}, baseline ${describeTreeMemory(endMem.baseline)}`);
    for (const k of KEYS) {
      const n = mirrors[k].proc.notable();
      if (n.count === 0) continue;
      // Group by phase and by message so a burst of one warning reads as one line.
      const groups = new Map<string, { count: number; example: string }>();
      for (const { at, line: text } of n.lines) {
        const ph = phases.filter((p) => p.at <= at).at(-1)?.name ?? '?';
        const key = `${ph} | ${summarizeLogLine(text)}`;
        const g = groups.get(key);
        if (g) g.count += 1;
        else groups.set(key, { count: 1, example: text });
      }
      const lines = [...groups.entries()].map(([key, g]) => `${g.count}x ${key}\n        e.g. ${g.example}`);
      problems.push(`${k} logged ${n.count} warning/error line(s)${n.count > n.lines.length ? ` (first ${n.lines.length} grouped)` : ''}:\n      ${lines.join('\n      ')}`);
    }
    const noisy = otherLoad.filter((o) => o.cores >= 0.15);
    if (noisy.length > 0) {
      const mean = otherLoad.reduce((sum, o) => sum + o.cores, 0) / otherLoad.length;
      const worst = noisy.reduce((a, b) => (b.cores > a.cores ? b : a));
      problems.unshift(
        `other processes on this machine used >= 0.15 cores during ${noisy.length} of ${otherLoad.length} runs ` +
          `(mean ${mean.toFixed(2)}, max ${worst.cores.toFixed(2)} cores in ${worst.phase}; affected: ${[...new Set(noisy.map((o) => o.phase))].join(', ')}): ` +
          'those figures are noisy; re-run on an idle machine (--wait-idle helps only at the start)',
      );
    }
    if (problems.length > 0) log(renderProblems(problems));
    return failed ? 1 : 0;
  } finally {
    guard.dispose();
    await guard.cleanup();
  }
}

await runBench(() => parseOptions(process.argv.slice(2), process.env), USAGE, main);
