#!/usr/bin/env node
/**
 * Issue 14, several nodes sharing one cache: one Gantry node, then three, on a cold blob with the
 * same clients, then warm req/s through one node and through the three behind a load balancer.
 *
 *   origin docker-registry ── counting forwarder (the WAN: --bandwidth shared by all, --latency-ms) ──┬── node-1 ─┐
 *                                                                                                    ├── node-2 ─┼── nginx (round-robin, warm runs)
 *   redis-server (fill leases) · Swift s3api (shared tier, one bucket)  ── used by every node ──     └── node-3 ─┘
 *
 * Every node is bin/gantry as its own process, configured through GANTRY_* variables. See
 * bench/README.md, "Several nodes".
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { pushBlob, randomBlob } from '../test/fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../test/helpers/counting-forwarder.ts';
import { startRedisServer } from '../test/helpers/redis-server.ts';
import { s3ClientFor, startS3Server } from '../test/helpers/s3-server.ts';
import { startUpstreamRegistry } from '../test/helpers/upstream-registry.ts';
import { fillerOf, followerDelays, metricSum, renderClusterTable, requestsPerUpstream, type ClusterRow } from './cluster-figures.ts';
import { WRK_BIN, WRK_INSTALL_HINT, coldFetchInWorker, undiciLoadInWorker, wrkLoad, type ColdRun, type LoadResult, type LoadSpec } from './load.ts';
import { CLUSTER_USAGE, UsageError, parseClusterOptions, type ClusterOptions } from './options.ts';
import {
  CpuMeter, NGINX_BIN, NGINX_INSTALL_HINT, REPO_ROOT, TreeMemorySampler, guardRun, mib, readTreeMemory, runBench, startGantryProcess, startNginxBalancer, waitForIdle,
  type MirrorProcess, type TreeMemory,
} from './procs.ts';
import { fmt, renderProblems } from './report.ts';

const MiB = 2 ** 20;
const BUCKET = 'gantry-bench';
const FETCH_TIMEOUT_MS = 60_000;
/** Log lines at warn that every node writes once when it starts as intended. */
const EXPECTED_WARNINGS = [/connected to redis; sharing fills/];

type Node = MirrorProcess & { cacheDir: string; nodeId: string };
type BlobRef = { digest: string; size: number };
/** Counters read from each node's /metrics before and after a cold run. */
type NodeCounters = { taken: number; peer: number; takenOver: number; peerReceived: number; peerSent: number; sharedRead: number; sharedWritten: number; upstreamBytes: number };

const log = (s = ''): void => {
  process.stdout.write(`${s}\n`);
};

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error !== undefined) return 'not found';
  return `${r.stdout}${r.stderr}`.split('\n')[0]?.trim() ?? '?';
}

async function metricsText(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (res.status !== 200) throw new Error(`${url}/metrics: HTTP ${res.status}`);
  return res.text();
}

async function countersOf(node: Node): Promise<NodeCounters> {
  const t = await metricsText(node.url);
  return {
    taken: metricSum(t, 'gantry_fill_leases_total', { result: 'taken' }),
    peer: metricSum(t, 'gantry_fill_leases_total', { result: 'peer' }),
    takenOver: metricSum(t, 'gantry_fill_leases_total', { result: 'taken_over' }),
    peerReceived: metricSum(t, 'gantry_peer_bytes_total', { direction: 'received' }),
    peerSent: metricSum(t, 'gantry_peer_bytes_total', { direction: 'sent' }),
    sharedRead: metricSum(t, 'gantry_shared_tier_bytes_total', { direction: 'read' }),
    sharedWritten: metricSum(t, 'gantry_shared_tier_bytes_total', { direction: 'written' }),
    upstreamBytes: metricSum(t, 'gantry_upstream_bytes_total', { kind: 'blob' }),
  };
}

function rise(after: NodeCounters, before: NodeCounters): NodeCounters {
  const out = { ...after };
  for (const k of Object.keys(out) as Array<keyof NodeCounters>) out[k] = after[k] - before[k];
  return out;
}

/** GET with the body read to the end: status, sha256, X-Cache. */
async function getChecked(url: string): Promise<{ status: number; digest: string; size: number; xCache: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  const h = createHash('sha256');
  let size = 0;
  if (res.body !== null) {
    for await (const chunk of res.body) {
      h.update(chunk);
      size += chunk.length;
    }
  }
  return { status: res.status, digest: `sha256:${h.digest('hex')}`, size, xCache: res.headers.get('x-cache') ?? '' };
}

/** Poll until `check` holds; false at the deadline. */
async function until(check: () => Promise<boolean>, maxMs: number, everyMs = 100): Promise<boolean> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    if (await check().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** Wait until the forwarder has no open request (a node may keep filling after its clients are done). */
async function settle(fwd: CountingForwarder, maxMs: number): Promise<boolean> {
  return until(async () => fwd.requests.every((r) => r.done), maxMs, 250);
}

function summarizeLogLine(text: string): string {
  try {
    const rec = JSON.parse(text) as Record<string, unknown>;
    return [rec['msg'], rec['err']].filter((v) => typeof v === 'string').join(': ') || text.slice(0, 200);
  } catch {
    return text.slice(0, 200);
  }
}

async function main(opts: ClusterOptions): Promise<number> {
  const loadgen = opts.loadgen === 'auto' ? (WRK_BIN !== undefined ? 'wrk' : 'undici') : opts.loadgen;
  if (loadgen === 'wrk' && WRK_BIN === undefined) throw new UsageError(WRK_INSTALL_HINT);
  if (NGINX_BIN === undefined) throw new UsageError(NGINX_INSTALL_HINT);
  const guard = guardRun(opts.deadlineMs);
  const problems: string[] = [];
  let failed = false;

  const cmdline = [path.relative(process.cwd(), process.argv[0] ?? 'node') || 'node', ...process.argv.slice(1).map((a) => (path.isAbsolute(a) ? path.relative(process.cwd(), a) : a))].join(' ');
  log(`# Gantry: one node vs three sharing a cache${opts.quick ? ' (--quick)' : ''}`);
  log(`command:     ${cmdline}`);
  log(`date:        ${new Date().toISOString()}`);
  log(`gantry src:  ${versionOf('git', ['-C', REPO_ROOT, 'describe', '--always', '--dirty'])}`);
  log(`load avg:    ${loadavg().map((v) => v.toFixed(2)).join(' ')} (before start)`);
  log(`machine:     ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
  log(`WAN:         ${(opts.bandwidth / 1e6).toFixed(1)} MB/s (${(opts.bandwidth / MiB).toFixed(1)} MiB/s) through one forwarder shared by every node; +${opts.latencyMs} ms per request`);
  log(`cold runs:   a new ${mib(opts.blobBytes)} blob per run, ${opts.clients} concurrent clients (undici, one connection each, every body sha256-checked, on one worker thread)`);
  log(`req/s runs:  warm ${mib(opts.smallBlobBytes)} blob, ${opts.connections} connections, ${opts.warmupMs / 1000} s warm-up + ${opts.durationMs / 1000} s measured, one run each; load generator: ` +
    `${loadgen === 'wrk' ? `${versionOf(WRK_BIN ?? 'wrk', ['-v']).split(' ').slice(0, 2).join(' ')} (-t${cpus().length})` : 'undici loop on a worker thread'}`);
  log(`balancer:    ${versionOf(NGINX_BIN, ['-v'])}, round-robin, keep-alive to the nodes, proxy_buffering off, proxy_buffer_size 64k`);
  if (opts.waitIdleMs > 0) {
    const w = await waitForIdle(opts.waitIdleMs, 0.15);
    log(`wait-idle:   ${w.idle ? 'machine idle' : `still busy after ${opts.waitIdleMs / 1000} s`} (other processes ${w.other.toFixed(2)} cores)`);
  }
  log('');

  try {
    // ---------------------------------------------------------------- set-up
    const t0 = performance.now();
    const origin = await startUpstreamRegistry({ storage: 'filesystem' });
    guard.defer(() => origin.stop());
    const fwd = await startCountingForwarder({ target: origin.url, bytesPerSecond: opts.bandwidth, latencyMs: opts.latencyMs });
    guard.defer(() => fwd.stop());
    const [redis, s3] = await Promise.all([startRedisServer(), opts.s3 ? startS3Server() : undefined]);
    guard.defer(() => redis.stop());
    if (s3 !== undefined) guard.defer(() => s3.stop());
    const s3c = s3 === undefined ? undefined : s3ClientFor(s3);
    if (s3c !== undefined) {
      guard.defer(async () => s3c.destroy());
      await s3c.send(new CreateBucketCommand({ Bucket: BUCKET }));
    }
    log(`origin:      docker-registry ${origin.url} (filesystem), WAN forwarder ${fwd.url}`);
    log(`redis:       pid ${redis.pid()} ${redis.url} (no persistence)`);
    log(s3 === undefined
      ? 's3:          none (--no-s3): no shared tier, the nodes share fills through Redis and the peer endpoint only'
      : `s3:          Swift s3api ${s3.endpoint} (pids ${s3.pids().join(',')}), bucket ${BUCKET}; started in ${(s3.startMs / 1000).toFixed(1)} s`);

    const push = async (seed: string, size: number): Promise<BlobRef> => {
      const blob = randomBlob(size, `gantry-cluster-bench-${seed}-${size}`);
      await pushBlob(origin.url, 'bench/cluster', blob);
      return { digest: blob.digest, size };
    };
    const small = await push('small', opts.smallBlobBytes);
    const coldOne = await push('cold-1-node', opts.blobBytes);
    const coldThree = await push('cold-3-nodes', opts.blobBytes);
    log(`data:        bench/cluster: two ${mib(opts.blobBytes)} blobs (one per cold run) and a ${mib(opts.smallBlobBytes)} blob, random; set-up took ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const peerToken = randomBytes(24).toString('hex');
    const infraPids = (): number[] => [redis.pid(), ...(s3?.pids() ?? [])].filter((p) => p > 0);
    const startNode = async (nodeId: string): Promise<Node> => {
      const proc = await startGantryProcess(fwd.url, (port) => ({
        GANTRY_NODE_ID: nodeId,
        GANTRY_ADVERTISE_URL: `http://127.0.0.1:${port}`,
        GANTRY_PEER_TOKEN: peerToken,
        GANTRY_REDIS_URL: redis.url,
        ...(s3 === undefined
          ? {}
          : {
            GANTRY_S3_ENDPOINT: s3.endpoint,
            GANTRY_S3_REGION: s3.region,
            GANTRY_S3_BUCKET: BUCKET,
            GANTRY_S3_FORCE_PATH_STYLE: 'true',
            // The AWS SDK finds its credentials in the environment, as in a deployment.
            AWS_ACCESS_KEY_ID: s3.accessKeyId,
            AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
            AWS_REGION: s3.region,
          }),
      }));
      const node: Node = { ...proc, nodeId };
      guard.defer(() => node.stop());
      // Sharing fills from the first request on needs Redis connected (it answers "alone" otherwise).
      if (!(await until(async () => metricSum(await metricsText(node.url), 'gantry_redis_up') === 1, 15_000))) throw new Error(`${nodeId}: not connected to Redis after 15 s`);
      return node;
    };
    const live: Node[] = [];
    const checkAlive = (): void => {
      for (const n of live) {
        const info = n.exitInfo();
        if (info !== undefined) throw new Error(`${n.nodeId}: ${info}`);
      }
    };
    const describeNodes = (nodes: readonly Node[]): string => nodes.map((n) => `${n.nodeId} pid ${n.pid} ${n.url}`).join('; ');
    const memoryOf = (nodes: readonly Node[]): string => {
      const ms = nodes.map((n) => readTreeMemory(n.pid)).filter((m): m is TreeMemory => m !== undefined);
      const pss = ms.reduce((s, m) => s + m.pssBytes, 0);
      const procs = ms.reduce((s, m) => s + m.pids.length, 0);
      return `PSS ${mib(pss)} of ${procs} processes (${ms.map((m) => mib(m.pssBytes)).join(' + ')})`;
    };
    /** A first GET through each node in turn (connections, JIT; the blob lands in every node's cache), checked. */
    const warmUp = async (nodes: readonly Node[]): Promise<string[]> => {
      const how: string[] = [];
      for (const n of nodes) {
        const r = await getChecked(`${n.url}/v2/bench/cluster/blobs/${small.digest}`);
        if (r.status !== 200 || r.digest !== small.digest) throw new Error(`${n.nodeId}: warm-up GET: HTTP ${r.status}, ${r.size} bytes, ${r.digest === small.digest ? 'right' : 'wrong'} digest`);
        how.push(`${n.nodeId} ${r.xCache || '?'}`);
      }
      await settle(fwd, 15_000);
      return how;
    };
    const inS3 = async (digest: string): Promise<boolean> => {
      if (s3c === undefined) return false;
      try {
        await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `blobs/${digest.replace(':', '/')}` }));
        return true;
      } catch {
        return false;
      }
    };

    // Other sessions may share this machine: every run line says how much CPU the rest took.
    const otherLoad: Array<{ what: string; cores: number }> = [];
    const coresNote = (what: string, main: { label: string; meter: CpuMeter }, extra: { label: string; meter: CpuMeter }, ownLabel: string): { text: string; cpuSecs: number } => {
      const m = main.meter.read();
      const x = extra.meter.read();
      otherLoad.push({ what, cores: m.other });
      return {
        text: `{cores: ${main.label} ${m.proc.toFixed(2)} (${m.processes} proc), ${extra.label} ${x.proc.toFixed(2)}, ${ownLabel} ${Math.max(0, m.own - x.proc).toFixed(2)}, others ${m.other.toFixed(2)}}`,
        cpuSecs: m.proc * m.secs,
      };
    };

    // ---------------------------------------------------------------- cold runs
    type Cold = { run: ColdRun; blobGets: number; bytesRatio: number; wanMs: number; filler: number | undefined; peakPss: number; cpuSecs: number; inS3Ms: number };
    const coldTimeout = Math.ceil((opts.blobBytes / opts.bandwidth) * 3000 + ((opts.clients * opts.blobBytes) / 50e6) * 1000 + 60_000);
    const coldRun = async (label: string, nodes: readonly Node[], blob: BlobRef): Promise<Cold> => {
      log(`[${label}] cold ${mib(blob.size)} blob, ${opts.clients} clients${nodes.length > 1 ? ` round-robin over ${nodes.length} nodes` : ''}`);
      await settle(fwd, 15_000);
      fwd.reset();
      const before = await Promise.all(nodes.map(countersOf));
      const pids = nodes.map((n) => n.pid);
      const meter = new CpuMeter(pids);
      const infra = new CpuMeter(infraPids());
      const sampler = new TreeMemorySampler(pids, 25);
      // The blob's download over the WAN, from its GET reaching the forwarder to its last byte: the
      // floor under the wall time (polled on this thread, which runs the forwarder; 10 ms steps).
      const wan = { start: NaN, end: NaN };
      const watch = setInterval(() => {
        const r = fwd.requests.find((q) => q.method === 'GET' && q.path.includes(blob.digest));
        if (r === undefined) return;
        if (Number.isNaN(wan.start)) wan.start = performance.now();
        if (r.done && Number.isNaN(wan.end)) wan.end = performance.now();
      }, 10);
      let run: ColdRun;
      try {
        run = await coldFetchInWorker({ baseUrl: nodes.map((n) => n.url), path: `/v2/bench/cluster/blobs/${blob.digest}`, digest: blob.digest, size: blob.size, clients: opts.clients, timeoutMs: coldTimeout });
        await until(async () => !Number.isNaN(wan.end) || Number.isNaN(wan.start), coldTimeout, 20);
      } finally {
        clearInterval(watch);
      }
      const wanMs = wan.end - wan.start;
      const mem = sampler.stop();
      const cores = coresNote(label, { label: 'gantry', meter }, { label: 'redis+s3', meter: infra }, 'bench+origin+clients');
      const settled = await settle(fwd, coldTimeout);
      checkAlive();
      const after = await Promise.all(nodes.map(countersOf));
      const got = after.map((a, i) => rise(a, before[i] as NodeCounters));
      const filler = fillerOf(got.map((g) => g.taken));
      const delays = followerDelays(run, filler);
      const blobGets = fwd.count({ method: 'GET', pathIncludes: blob.digest });
      const bytesRatio = fwd.bytesOut() / blob.size;
      // The filling node publishes to S3 once its copy is verified and committed (its lease is held
      // until then): wait for it, bounded, so it does not run into the next phase.
      const s3Start = performance.now();
      const published = s3c === undefined || (await until(() => inS3(blob.digest), 60_000, 100));
      const inS3Ms = published && s3c !== undefined ? performance.now() - s3Start : NaN;
      if (run.failures.length > 0) {
        failed = true;
        problems.push(`${label}: ${run.clients - run.ok} of ${run.clients} clients failed: ${run.failures.join('; ')}`);
      }
      if (!settled) problems.push(`${label}: upstream requests still open when counted`);
      if (!published) problems.push(`${label}: the blob was not in S3 60 s after the clients were done`);
      if (filler === undefined) problems.push(`${label}: no single node took the fill lease (leases taken per node: ${got.map((g) => g.taken).join('/')})`);
      const fillerName = filler === undefined ? 'unknown' : nodes[filler]?.nodeId;
      log(
        `    ${fmt.seconds(run.totalMs)}  ok ${run.ok}/${run.clients}  leader first byte ${fmt.ms(run.leaderTtfbMs)}  max follower delay ${fmt.ms(delays.allMs)}` +
          `${nodes.length > 1 ? ` (clients on other nodes than ${fillerName}: ${fmt.ms(delays.otherNodesMs)})` : ''}  max final-chunk wait ${fmt.ms(run.maxFinalChunkWaitMs)}`,
      );
      log(
        `    upstream: ${fwd.requests.length} requests, blob GETs ${blobGets}, bytes ratio ${fmt.ratio(bytesRatio)}, download ${fmt.seconds(wanMs)};  filled by ${fillerName};  ${s3c === undefined ? 'no shared tier' : `in S3 ${fmt.seconds(inS3Ms)} after the last client`};  ` +
          `peak PSS ${fmt.mib(mem.peakBytes)} (${mem.method}; peak RSS sum ${fmt.mib(mem.peakRssBytes)});  Gantry CPU ${cores.cpuSecs.toFixed(2)} s  ${cores.text}`,
      );
      for (const [i, n] of nodes.entries()) {
        const p = run.perNode[i];
        const g = got[i];
        if (p === undefined || g === undefined) continue;
        log(
          `      ${n.nodeId.padEnd(7)} ${p.ok}/${p.clients} clients ok, first bytes ${fmt.ms(p.firstByteMinMs)}..${fmt.ms(p.firstByteMaxMs)}, last body ${fmt.seconds(p.lastEndMs)};  ` +
            `leases taken ${g.taken}, peer ${g.peer}, taken over ${g.takenOver};  upstream ${fmt.mib(g.upstreamBytes)}, peer received ${fmt.mib(g.peerReceived)} sent ${fmt.mib(g.peerSent)}, S3 read ${fmt.mib(g.sharedRead)}`,
        );
      }
      return { run, blobGets, bytesRatio, wanMs, filler, peakPss: mem.peakBytes, cpuSecs: cores.cpuSecs, inS3Ms };
    };

    // Run A: one node, configured as each of the three will be (Redis, S3 unless --no-s3): the runs differ only in
    // the number of nodes the clients are spread over.
    const solo = await startNode('solo');
    live.push(solo);
    log(`1 node:      ${describeNodes([solo])}; GANTRY_NODE_ID, GANTRY_ADVERTISE_URL, GANTRY_PEER_TOKEN, GANTRY_REDIS_URL, ${s3 === undefined ? 'no GANTRY_S3_*' : `GANTRY_S3_* (bucket ${BUCKET}), AWS_* credentials`}, GANTRY_LOG_LEVEL=warn, workers default`);
    log(`             warm-up GET of the small blob: ${(await warmUp([solo])).join(', ')}; idle ${memoryOf([solo])}`);
    log('');
    const one = await coldRun('1 node', [solo], coldOne);
    log('');
    // Out of the way of the 3-node run: its memory and CPU would count in nothing, but it would
    // still take a share of the cores.
    live.splice(live.indexOf(solo), 1);
    await solo.stop();

    // Run B: three nodes, the same number of clients spread round-robin.
    const nodes: Node[] = [];
    for (const id of ['node-1', 'node-2', 'node-3']) {
      const n = await startNode(id);
      nodes.push(n);
      live.push(n);
    }
    log(`3 nodes:     ${describeNodes(nodes)}; the same settings, one cache dir each`);
    log(`             warm-up GET of the small blob on each in turn (X-Cache): ${(await warmUp(nodes)).join(', ')}; idle ${memoryOf(nodes)}`);
    log('');
    const three = await coldRun('3 nodes', nodes, coldThree);
    log('');

    // ---------------------------------------------------------------- warm req/s
    const smallPath = `/v2/bench/cluster/blobs/${small.digest}`;
    for (const n of nodes) {
      const r = await getChecked(`${n.url}${smallPath}`);
      if (r.status !== 200 || r.digest !== small.digest || r.xCache !== 'HIT') throw new Error(`${n.nodeId}: the ${mib(small.size)} blob is not a cache hit: HTTP ${r.status}, X-Cache ${r.xCache || 'absent'}, ${r.digest === small.digest ? 'right' : 'wrong'} digest`);
    }
    const lb1 = await startNginxBalancer([nodes[0]?.host ?? '']);
    guard.defer(() => lb1.stop());
    const lb3 = await startNginxBalancer(nodes.map((n) => n.host));
    guard.defer(() => lb3.stop());
    for (const lb of [lb1, lb3]) {
      for (let i = 0; i < nodes.length; i++) {
        const r = await getChecked(`${lb.url}${smallPath}`);
        if (r.status !== 200 || r.digest !== small.digest) throw new Error(`nginx ${lb.url}: HTTP ${r.status}, ${r.size} bytes, ${r.digest === small.digest ? 'right' : 'wrong'} digest (config ${lb.configPath})`);
      }
    }
    log(`nginx:       pid ${lb1.pid} ${lb1.url} -> ${nodes[0]?.nodeId}; pid ${lb3.pid} ${lb3.url} -> ${nodes.map((n) => n.nodeId).join(', ')} (round-robin); both checked (sha256)`);
    log('');
    const loadRun = (spec: LoadSpec): Promise<LoadResult> => (loadgen === 'wrk' ? wrkLoad(spec, cpus().length) : undiciLoadInWorker(spec));
    const warm = async (what: string, url: string, balancer: MirrorProcess | undefined): Promise<LoadResult> => {
      await settle(fwd, 10_000);
      fwd.reset();
      const meter = new CpuMeter(nodes.map((n) => n.pid));
      const lbMeter = new CpuMeter(balancer === undefined ? [] : [balancer.pid]);
      const r = await loadRun({ url: `${url}${smallPath}`, headers: {}, connections: opts.connections, warmupMs: opts.warmupMs, durationMs: opts.durationMs, bodyBytes: small.size });
      const cores = coresNote(what, { label: 'gantry', meter }, { label: 'nginx', meter: lbMeter }, `bench+${loadgen === 'wrk' ? 'wrk' : 'clients'}`);
      checkAlive();
      log(`    ${what.padEnd(30)} ${fmt.rps(r.requestsPerSec)} (${fmt.mibps(r.requestsPerSec * small.size)})  p50 ${fmt.ms(r.p50Ms)}  p99 ${fmt.ms(r.p99Ms)}  errors ${r.errors}  upstream requests ${fwd.requests.length}  ${cores.text}`);
      if (r.errors > 0) {
        failed = true;
        problems.push(`warm ${what}: ${r.errors} errors (non-2xx, socket errors or timeouts)`);
      }
      if (fwd.requests.length > 0) problems.push(`warm ${what}: ${fwd.requests.length} upstream requests during a warm run (expected none)`);
      return r;
    };
    log(`[warm] ${mib(small.size)} blob cached on every node, ${opts.connections} connections, ${opts.durationMs / 1000} s [${loadgen === 'wrk' ? `wrk -t${cpus().length} -c${opts.connections}` : 'undici loop'}]`);
    const direct = await warm(`1 node (${nodes[0]?.nodeId}), direct`, nodes[0]?.url ?? '', undefined);
    const via1 = await warm('1 node behind nginx', lb1.url, lb1);
    const via3 = await warm('3 nodes behind nginx', lb3.url, lb3);
    const spread = requestsPerUpstream(await readFile(lb3.accessLog, 'utf8').catch(() => ''));
    log(`    requests per node through the 3-node balancer (its access log): ${nodes.map((n) => `${n.nodeId} ${spread.get(n.host) ?? 0}`).join(', ')}`);
    log(`    note: the ${cpus().length} cores are shared by all three nodes, nginx and the load generator, so warm throughput cannot scale with nodes here: these rows show the load-balanced path's cost, not scaling`);
    log('');

    // ---------------------------------------------------------------- summary
    const oneD = followerDelays(one.run, one.filler);
    const threeD = followerDelays(three.run, three.filler);
    const rows: ClusterRow[] = [
      { section: 'cold', figure: `${mib(opts.blobBytes)} blob, ${opts.clients} clients: wall time (all bodies sha256-checked)`, one: one.run.totalMs, three: three.run.totalMs, format: fmt.seconds, target: '', pass: undefined },
      { section: 'cold', figure: 'the blob\'s download over the WAN (its upstream GET)', one: one.wanMs, three: three.wanMs, format: fmt.seconds, target: '', pass: undefined },
      { section: 'cold', figure: 'upstream blob GETs', one: one.blobGets, three: three.blobGets, format: fmt.count, target: '', pass: undefined },
      { section: 'cold', figure: 'upstream bytes ratio (forwarder bytes / blob size)', one: one.bytesRatio, three: three.bytesRatio, format: fmt.ratio, target: '1.00 (3 nodes)', pass: three.bytesRatio <= 1.005 },
      { section: 'cold', figure: 'leader first byte', one: one.run.leaderTtfbMs, three: three.run.leaderTtfbMs, format: fmt.ms, target: '', pass: undefined },
      { section: 'cold', figure: 'max follower first-byte delay, all clients', one: oneD.allMs, three: threeD.allMs, format: fmt.ms, target: '', pass: undefined },
      { section: 'cold', figure: 'max follower first-byte delay, clients on other nodes than the filler', one: oneD.otherNodesMs, three: threeD.otherNodesMs, format: fmt.ms, target: '', pass: undefined },
      { section: 'cold', figure: 'peak PSS, all Gantry processes', one: one.peakPss, three: three.peakPss, format: fmt.mib, target: '', pass: undefined },
      { section: 'cold', figure: 'Gantry CPU time during the run, all processes', one: one.cpuSecs * 1000, three: three.cpuSecs * 1000, format: fmt.seconds, target: '', pass: undefined },
      { section: 'warm', figure: `${mib(small.size)} blob, ${opts.connections} conns: req/s (1 node direct; 3 nodes behind nginx)`, one: direct.requestsPerSec, three: via3.requestsPerSec, format: fmt.rps, target: '', pass: undefined },
      { section: 'warm', figure: 'p99 (1 node direct; 3 nodes behind nginx)', one: direct.p99Ms, three: via3.p99Ms, format: fmt.ms, target: '', pass: undefined },
      { section: 'warm', figure: 'req/s, both behind nginx', one: via1.requestsPerSec, three: via3.requestsPerSec, format: fmt.rps, target: '', pass: undefined },
      { section: 'warm', figure: 'p99, both behind nginx', one: via1.p99Ms, three: via3.p99Ms, format: fmt.ms, target: '', pass: undefined },
    ];
    log(`## 1 node vs 3 nodes sharing a cache (3/1 = 3 nodes / 1 node; verdicts judge the issue's targets)`);
    log('');
    log(renderClusterTable(rows));
    log('');
    const misses = rows.filter((r) => r.pass === false);
    log(`targets: ${rows.filter((r) => r.pass === true).length} PASS, ${misses.length} MISS${misses.length > 0 ? `: ${misses.map((r) => r.figure).join('; ')}` : ''}`);
    log(`filled by: 1 node: ${one.filler === undefined ? 'unknown' : 'solo'}; 3 nodes: ${three.filler === undefined ? 'unknown' : nodes[three.filler]?.nodeId} (gantry_fill_leases_total{result="taken"} rose on that node only)`);
    log(`memory after all runs: ${memoryOf(nodes)}`);
    log(`note: on ${cpus().length} cores the three nodes share the same cores (with nginx, the clients and the load generator): the warm rows show the load-balanced path's overhead, not scaling.`);

    const noisy = otherLoad.filter((o) => o.cores >= 0.15);
    if (noisy.length > 0) {
      problems.unshift(`other processes on this machine used >= 0.15 cores during ${noisy.length} of ${otherLoad.length} runs (${noisy.map((o) => `${o.what} ${o.cores.toFixed(2)}`).join(', ')}): those figures are noisy; re-run on an idle machine`);
    }
    for (const n of [solo, ...nodes]) {
      const lines = n.notable().lines.filter((l) => !EXPECTED_WARNINGS.some((re) => re.test(l.line)));
      if (lines.length === 0) continue;
      const groups = new Map<string, number>();
      for (const l of lines) groups.set(summarizeLogLine(l.line), (groups.get(summarizeLogLine(l.line)) ?? 0) + 1);
      problems.push(`${n.nodeId} logged ${lines.length} warning/error line(s): ${[...groups.entries()].map(([m, c]) => `${c}x ${m}`).join('; ')}`);
    }
    for (const lb of [lb1, lb3]) {
      const n = lb.notable();
      if (n.count > 0) problems.push(`nginx ${lb.url} logged ${n.count} line(s), e.g. ${n.lines.slice(0, 3).map((l) => l.line).join(' | ')}`);
    }
    if (problems.length > 0) log(renderProblems(problems));
    return failed ? 1 : 0;
  } finally {
    guard.dispose();
    await guard.cleanup();
  }
}

await runBench(() => parseClusterOptions(process.argv.slice(2), process.env), CLUSTER_USAGE, main);
