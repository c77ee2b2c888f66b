#!/usr/bin/env node
/**
 * Issue 13, "Serve cached layers at nginx's pace, whatever their size": warm cache hits on Gantry
 * vs nginx serving the very same files, on loopback, in one run.
 *
 *   origin docker-registry ── counting forwarder (no WAN limits; counts upstream requests) ── Gantry (bin/gantry, log level info)
 *                                                                                            │ cache dir
 *                                                              nginx (sendfile off) ─────────┘ same files, same URLs
 *
 * Every object is pulled once through Gantry, checked to be a cache hit, then loaded with wrk
 * (Gantry, then nginx, never both at once). See bench/README.md, "Serving cached objects".
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { stat, readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { MANIFEST_ACCEPT, buildImage, makeLayer, pushBlob, pushImage, randomBlob } from '../test/fixtures/images.ts';
import { startCountingForwarder } from '../test/helpers/counting-forwarder.ts';
import { startUpstreamRegistry } from '../test/helpers/upstream-registry.ts';
import { WRK_BIN, WRK_INSTALL_HINT, curlOnce, wrkLoad, type LoadResult } from './load.ts';
import { SERVE_USAGE, UsageError, parseServeOptions, type ServeOptions } from './options.ts';
import { runBench, CpuMeter, NGINX_BIN, NGINX_INSTALL_HINT, REPO_ROOT, TreeMemorySampler, describeTreeMemory, guardRun, mib, readTreeMemory, startGantryProcess, startNginx, waitForIdle, type MirrorProcess } from './procs.ts';
import { fmt, ratio, renderColumns, renderProblems, verdict } from './report.ts';

type Key = 'gantry' | 'nginx';
type Both<T> = Record<Key, T>;
const KEYS: readonly Key[] = ['gantry', 'nginx'];
const MiB = 2 ** 20;
/** A whole 32 MiB body at 64 connections can take seconds: wrk's default 5 s timeout would drop the slow ones from the latencies. */
const WRK_TIMEOUT_MS = 60_000;
const FETCH_TIMEOUT_MS = 120_000;

/** What wrk loads: one object, fetched by digest. */
type Case = { name: string; kind: 'blob' | 'manifest'; path: string; digest: string; size: number; headers: Record<string, string>; contentType: string };

const log = (s = ''): void => {
  process.stdout.write(`${s}\n`);
};

/** First line of a tool's version output, whichever stream it writes to (nginx -v uses stderr). */
function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error !== undefined) return 'not found';
  return `${r.stdout}${r.stderr}`.split('\n')[0]?.trim() ?? '?';
}

/** GET, reading the body to the end: status, sha256, size and the headers that matter here. */
async function fetchChecked(url: string, headers: Record<string, string>): Promise<{ status: number; digest: string; size: number; contentType: string; xCache: string }> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  const h = createHash('sha256');
  let size = 0;
  if (res.body !== null) {
    for await (const chunk of res.body) {
      h.update(chunk);
      size += chunk.length;
    }
  }
  return { status: res.status, digest: `sha256:${h.digest('hex')}`, size, contentType: res.headers.get('content-type') ?? '', xCache: res.headers.get('x-cache') ?? '' };
}

/**
 * Bytes per second delivered: what wrk read (headers and the unfinished responses at the end of the
 * run included) over the run. req/s x size would miss the unfinished ones, which at 64 connections
 * on a 32 MiB blob can be most of the bytes moved.
 */
function bytesPerSec(r: LoadResult, size: number): number {
  return r.bytesRead !== undefined && r.runMs !== undefined && r.runMs > 0 ? r.bytesRead / (r.runMs / 1000) : r.requestsPerSec * size;
}

/** The issue's targets, judged on Gantry's figures against nginx's. */
function judge(c: Case, g: LoadResult, n: LoadResult): { target: string; pass: boolean | undefined } {
  if (!Number.isFinite(g.requestsPerSec) || !Number.isFinite(n.requestsPerSec)) return { target: '', pass: undefined };
  if (c.kind === 'manifest') return { target: 'req/s >= 0.3x, p99 < 20 ms', pass: g.requestsPerSec >= 0.3 * n.requestsPerSec && g.p99Ms < 20 };
  return { target: 'req/s >= 1.0x, p99 <= 1.5x', pass: g.requestsPerSec >= n.requestsPerSec && g.p99Ms <= 1.5 * n.p99Ms };
}

async function main(opts: ServeOptions): Promise<number> {
  if (WRK_BIN === undefined) throw new UsageError(WRK_INSTALL_HINT);
  if (NGINX_BIN === undefined) throw new UsageError(NGINX_INSTALL_HINT);
  const guard = guardRun(opts.deadlineMs);
  const problems: string[] = [];
  let failed = false;

  const cmdline = [path.relative(process.cwd(), process.argv[0] ?? 'node') || 'node', ...process.argv.slice(1).map((a) => (path.isAbsolute(a) ? path.relative(process.cwd(), a) : a))].join(' ');
  log(`# Gantry vs nginx: warm cache hits${opts.quick ? ' (--quick)' : ''}`);
  log(`command:     ${cmdline}`);
  log(`date:        ${new Date().toISOString()}`);
  log(`gantry src:  ${versionOf('git', ['-C', REPO_ROOT, 'describe', '--always', '--dirty'])}`);
  log(`load avg:    ${loadavg().map((v) => v.toFixed(2)).join(' ')} (before start)`);
  log(`machine:     ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
  log(`nginx:       ${versionOf(NGINX_BIN, ['-v'])} (${NGINX_BIN}), sendfile off, worker_processes auto, access_log on (combined, to a file)`);
  log(`wrk runs:    ${versionOf(WRK_BIN, ['-v']).split(' ').slice(0, 2).join(' ')}, -t${cpus().length} -c${opts.connections}, ${opts.warmupMs / 1000} s warm-up + ${opts.durationMs / 1000} s measured, ` +
    `${opts.rounds === 1 ? 'one round' : `best req/s of ${opts.rounds} alternating rounds`}; wrk shares the machine's cores with the server under test`);
  log(`curl runs:   ${versionOf('curl', ['--version']).split(' ').slice(0, 2).join(' ')}, 1 client, -o /dev/null, best of ${opts.curlRuns} alternating`);
  log('');
  if (opts.waitIdleMs > 0) {
    const w = await waitForIdle(opts.waitIdleMs, 0.15);
    log(`wait-idle:   ${w.idle ? 'machine idle' : `still busy after ${opts.waitIdleMs / 1000} s`} (other processes ${w.other.toFixed(2)} cores)`);
  }

  try {
    // ---------------------------------------------------------------- set-up
    const origin = await startUpstreamRegistry({ storage: 'filesystem' });
    guard.defer(() => origin.stop());
    // No bandwidth or latency: the forwarder is here to count upstream requests (none is expected
    // during the measured runs).
    const fwd = await startCountingForwarder({ target: origin.url });
    guard.defer(() => fwd.stop());
    // The default log level (info: one access line per request, read by this process through a
    // pipe as journald or a container runtime would), not the warn of bench/run.ts.
    const gantry = await startGantryProcess(fwd.url, { GANTRY_LOG_LEVEL: 'info' });
    guard.defer(() => gantry.stop());
    log(`origin:      docker-registry ${origin.url} (filesystem), via a counting forwarder ${fwd.url}`);
    log(`gantry:      pid ${gantry.pid} ${gantry.url}: bin/gantry (dist/), GANTRY_LOG_LEVEL=info, GANTRY_CACHE_DIR=${gantry.cacheDir}`);

    const t0 = performance.now();
    const cases: Case[] = [];
    for (const size of [MiB + 1, 4 * MiB, 32 * MiB]) {
      const blob = randomBlob(size, `gantry-serve-${size}`);
      await pushBlob(origin.url, 'bench/serve', blob);
      cases.push({ name: `blob ${size === MiB + 1 ? '1 MiB + 1 B' : mib(size).replace('.0 ', ' ')}`, kind: 'blob', path: `/v2/bench/serve/blobs/${blob.digest}`, digest: blob.digest, size, headers: {}, contentType: 'application/octet-stream' });
    }
    const image = buildImage({ format: 'oci', layers: [makeLayer({ 'hello.txt': 'gantry bench/serve\n' })], seed: 'gantry-serve' });
    await pushImage(origin.url, 'bench/image', 'v1', image);
    cases.push({ name: `manifest by digest (${image.manifest.length} B)`, kind: 'manifest', path: `/v2/bench/image/manifests/${image.manifestDigest}`, digest: image.manifestDigest, size: image.manifest.length, headers: { Accept: MANIFEST_ACCEPT }, contentType: image.mediaType });
    const bigSize = 100 * MiB;
    const bigBlob = randomBlob(bigSize, `gantry-serve-${bigSize}`);
    await pushBlob(origin.url, 'bench/serve', bigBlob);
    const big: Case = { name: '100 MiB blob, 1 client (curl)', kind: 'blob', path: `/v2/bench/serve/blobs/${bigBlob.digest}`, digest: bigBlob.digest, size: bigSize, headers: {}, contentType: 'application/octet-stream' };
    log(`data:        pushed to origin in ${((performance.now() - t0) / 1000).toFixed(1)} s: bench/serve (blobs of ${[...cases.filter((c) => c.kind === 'blob'), big].map((c) => c.size).join(', ')} bytes, random), bench/image:v1 (OCI manifest ${image.manifestDigest.slice(0, 19)}…)`);

    // Pull each object once through Gantry, then check the second GET is a hit with the same
    // bytes, and that the file nginx will serve is where the blob store puts it.
    const all = [...cases, big];
    for (const c of all) {
      const first = await fetchChecked(`${gantry.url}${c.path}`, c.headers);
      if (first.status !== 200 || first.digest !== c.digest) throw new Error(`gantry: first GET of ${c.name}: HTTP ${first.status}, ${first.size} bytes, ${first.digest === c.digest ? 'right' : 'wrong'} digest`);
    }
    for (let i = 0; i < 200 && fwd.requests.some((r) => !r.done); i++) await new Promise((r) => setTimeout(r, 50));
    const pulled = fwd.requests.length;
    fwd.reset();
    for (const c of all) {
      const again = await fetchChecked(`${gantry.url}${c.path}`, c.headers);
      const hex = c.digest.slice('sha256:'.length);
      const file = path.join(gantry.cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
      const onDisk = await stat(file).catch(() => undefined);
      if (again.status !== 200 || again.digest !== c.digest || again.xCache !== 'HIT' || onDisk?.size !== c.size) {
        throw new Error(`gantry: ${c.name} is not a cache hit: HTTP ${again.status}, X-Cache ${again.xCache || 'absent'}, ${again.digest === c.digest ? 'right' : 'wrong'} digest, file ${onDisk === undefined ? 'missing' : `${onDisk.size} bytes`} at ${file}`);
      }
      if (again.contentType !== c.contentType) problems.push(`gantry: ${c.name}: Content-Type ${again.contentType} (expected ${c.contentType})`);
    }
    if (fwd.requests.length > 0) throw new Error(`gantry: the second GETs went upstream ${fwd.requests.length} time(s): not cache hits`);
    log(`cached:      ${all.length} objects pulled through Gantry (${pulled} upstream requests), then each GET again: X-Cache HIT, same sha256, 0 upstream requests; files under <cache>/blobs/sha256/`);

    const nginx = await startNginx({ cacheDir: gantry.cacheDir, manifestMediaType: image.mediaType });
    guard.defer(() => nginx.stop());
    for (const c of all) {
      const r = await fetchChecked(`${nginx.url}${c.path}`, c.headers);
      if (r.status !== 200 || r.digest !== c.digest || r.contentType !== c.contentType) {
        throw new Error(`nginx: ${c.name}: HTTP ${r.status}, Content-Type ${r.contentType}, ${r.size} bytes, ${r.digest === c.digest ? 'right' : 'wrong'} digest (config ${nginx.configPath})`);
      }
    }
    log(`nginx:       pid ${nginx.pid} ${nginx.url}: ${NGINX_BIN} -p <tmp> -c <tmp>/nginx.conf; root = Gantry's cache dir; every object checked (sha256, Content-Type)`);
    const servers: Both<MirrorProcess> = { gantry, nginx };
    log(`idle memory: gantry ${describeTreeMemory(readTreeMemory(gantry.pid))}`);
    log('');

    const checkAlive = (): void => {
      for (const k of KEYS) {
        const info = servers[k].exitInfo();
        if (info !== undefined) throw new Error(info);
      }
    };
    // Other sessions may share this machine: every run line says how much CPU others took.
    const noisy: string[] = [];
    const line = (k: Key, text: string, what: string, meter: CpuMeter): void => {
      const cpu = meter.read();
      if (cpu.other >= 0.15) noisy.push(`${what} ${k} (${cpu.other.toFixed(2)})`);
      log(`    ${k.padEnd(7)}${text}  {cores: ${k} ${cpu.proc.toFixed(2)} (${cpu.processes} proc), bench+wrk+origin ${cpu.own.toFixed(2)}, others ${cpu.other.toFixed(2)}}`);
    };

    // ---------------------------------------------------------------- wrk
    const results = new Map<Case, Both<LoadResult>>();
    const chosen = (c: Case): boolean => opts.only.length === 0 || opts.only.some((o) => c.name.includes(o));
    for (const c of cases.filter(chosen)) {
      log(`${c.name}: wrk -c${opts.connections}, ${opts.durationMs / 1000} s${c.kind === 'manifest' ? ', Accept: <OCI and Docker manifest types>' : ''}`);
      const best = {} as Partial<Both<LoadResult>>;
      for (let round = 0; round < opts.rounds; round++) {
        for (const k of KEYS) {
          const server = servers[k];
          fwd.reset();
          const meter = new CpuMeter(server.pid);
          const mem = k === 'gantry' ? new TreeMemorySampler(server.pid, 100) : undefined;
          const r = await wrkLoad(
            { url: `${server.url}${c.path}`, headers: c.headers, connections: opts.connections, warmupMs: opts.warmupMs, durationMs: opts.durationMs, bodyBytes: c.size, timeoutMs: WRK_TIMEOUT_MS },
            cpus().length,
          );
          const peak = mem?.stop();
          checkAlive();
          const perRequest = r.bytesRead !== undefined && r.requests > 0 ? r.bytesRead / r.requests : NaN;
          line(
            k,
            `run ${round + 1}: ${fmt.rps(r.requestsPerSec)} (${fmt.mibps(bytesPerSec(r, c.size))})  ${r.requests} requests completed  p50 ${fmt.ms(r.p50Ms)}  p99 ${fmt.ms(r.p99Ms)}  errors ${r.errors}` +
              `${peak !== undefined ? `  peak PSS ${fmt.mib(peak.peakBytes)} (${peak.method}; peak RSS sum ${fmt.mib(peak.peakRssBytes)})` : ''}`,
            c.name,
            meter,
          );
          if (r.errors > 0) {
            failed = true;
            problems.push(`${c.name} on ${k}: ${r.errors} errors (non-2xx, socket errors or timeouts) in run ${round + 1}`);
          }
          // wrk checks no body: the bytes it read per request (headers included) must cover one.
          if (perRequest < c.size * 0.99) {
            failed = true;
            problems.push(`${c.name} on ${k}: wrk read ${perRequest.toFixed(0)} bytes per request, less than the ${c.size}-byte body`);
          }
          if (k === 'gantry' && fwd.requests.length > 0) problems.push(`${c.name} on gantry: ${fwd.requests.length} upstream requests during a warm run (expected none)`);
          const prev = best[k];
          if (prev === undefined || r.requestsPerSec > prev.requestsPerSec) best[k] = r;
        }
      }
      results.set(c, best as Both<LoadResult>);
    }
    log('');

    // ---------------------------------------------------------------- curl
    log(`${big.name}: curl -o /dev/null, best of ${opts.curlRuns} (alternating)`);
    const curlRuns: Both<number[]> = { gantry: [], nginx: [] };
    for (let round = 0; round < (chosen(big) ? opts.curlRuns : 0); round++) {
      for (const k of KEYS) {
        const meter = new CpuMeter(servers[k].pid);
        try {
          const bps = await curlOnce(`${servers[k].url}${big.path}`, big.size);
          curlRuns[k].push(bps);
          line(k, `run ${round + 1}: ${fmt.mibps(bps)}`, big.name, meter);
        } catch (err) {
          failed = true;
          problems.push(`${big.name} on ${k}: ${(err as Error).message}`);
          line(k, `run ${round + 1}: FAILED: ${(err as Error).message}`, big.name, meter);
        }
        checkAlive();
      }
    }
    const bestOf = (runs: number[]): number => (runs.length > 0 ? Math.max(...runs) : NaN);
    const curlBest: Both<number> = { gantry: bestOf(curlRuns.gantry), nginx: bestOf(curlRuns.nginx) };
    log('');

    // ---------------------------------------------------------------- summary
    log(`## Gantry vs nginx, warm cache hits (${opts.connections} connections, ${opts.durationMs / 1000} s per wrk run; rate g/n = gantry / nginx)`);
    log('');
    const header = ['case', 'gantry req/s', 'MiB/s', 'p50', 'p99', 'nginx req/s', 'MiB/s', 'p50', 'p99', 'rate g/n', 'p99 g/n', 'target', ''];
    const body: string[][] = [];
    const verdicts: Array<{ name: string; pass: boolean | undefined }> = [];
    const lowSample: string[] = [];
    for (const c of cases) {
      const res = results.get(c);
      if (res === undefined) continue;
      const { gantry: g, nginx: n } = res;
      const v = judge(c, g, n);
      verdicts.push({ name: c.name, pass: v.pass });
      // Fewer completed requests than connections: some connections finished none, and wrk has no
      // latency for them, so p99 flatters the server.
      const p99 = (r: LoadResult): string => `${fmt.ms(r.p99Ms)}${r.requests < opts.connections ? '*' : ''}`;
      if (g.requests < opts.connections || n.requests < opts.connections) lowSample.push(c.name);
      body.push([
        c.name,
        fmt.rps(g.requestsPerSec), fmt.mibps(bytesPerSec(g, c.size)), fmt.ms(g.p50Ms), p99(g),
        fmt.rps(n.requestsPerSec), fmt.mibps(bytesPerSec(n, c.size)), fmt.ms(n.p50Ms), p99(n),
        ratio(g.requestsPerSec, n.requestsPerSec), ratio(g.p99Ms, n.p99Ms), v.target, verdict(v.pass),
      ]);
    }
    const bigPass = Number.isFinite(curlBest.gantry) && Number.isFinite(curlBest.nginx) ? curlBest.gantry >= curlBest.nginx : undefined;
    verdicts.push({ name: big.name, pass: bigPass });
    body.push([big.name, '', fmt.mibps(curlBest.gantry), '', '', '', fmt.mibps(curlBest.nginx), '', '', ratio(curlBest.gantry, curlBest.nginx), '', 'MiB/s >= 1.0x', verdict(bigPass)]);
    log(renderColumns(header, body, new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])));
    log('MiB/s: bytes wrk read per second (headers and unfinished responses included); the curl row: body bytes per second.');
    if (lowSample.length > 0) log(`*: fewer requests completed than there are connections (${lowSample.join('; ')}): wrk has no latency for a request still running at the end, so that p99 is too low`);
    log('');
    const misses = verdicts.filter((v) => v.pass === false);
    log(`targets: ${verdicts.filter((v) => v.pass === true).length} PASS, ${misses.length} MISS${misses.length > 0 ? `: ${misses.map((v) => v.name).join('; ')}` : ''}`);
    const accessLog = await readFile(nginx.accessLog).catch(() => Buffer.alloc(0));
    let accessLines = 0;
    for (const b of accessLog) if (b === 0x0a) accessLines += 1;
    log(`logs: nginx access log ${accessLines} lines (${fmt.mib(accessLog.length)}); gantry memory after all runs: ${describeTreeMemory(readTreeMemory(gantry.pid))}`);
    if (opts.quick) log('note: --quick runs are 2 s: p99 is inflated by wrk\'s connection start-up (bench/README.md); judge p99 on the default 10 s runs');

    if (noisy.length > 0) {
      problems.unshift(`other processes used >= 0.15 cores during ${noisy.length} run(s): ${noisy.join(', ')}; those figures are noisy (--wait-idle helps only at the start)`);
    }
    for (const k of KEYS) {
      const n = servers[k].notable();
      if (n.count > 0) problems.push(`${k} logged ${n.count} warning/error line(s), e.g. ${n.lines.slice(0, 3).map((l) => l.line).join(' | ')}`);
    }
    if (problems.length > 0) log(renderProblems(problems));
    return failed ? 1 : 0;
  } finally {
    guard.dispose();
    await guard.cleanup();
  }
}

await runBench(() => parseServeOptions(process.argv.slice(2), process.env), SERVE_USAGE, main);
