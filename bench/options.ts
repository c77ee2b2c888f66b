import { parseArgs } from 'node:util';
import { parseSize } from '../src/config/config.ts';

export type Loadgen = 'auto' | 'wrk' | 'undici';

export type BenchOptions = {
  quick: boolean;
  /** Simulated WAN: response-body bytes per second through each mirror's forwarder (shared by all its connections). */
  bandwidth: number;
  /** Simulated WAN: delay added before each request is forwarded. */
  latencyMs: number;
  /** Size of each cold/warm big blob. */
  blobBytes: number;
  /** Concurrency levels of the cold multi-client runs, ascending; the last one is "the N-client run" (peak memory). */
  clients: number[];
  /** Total size of the layers of the skopeo image. */
  imageBytes: number;
  layers: number;
  smallBlobBytes: number;
  /** Measured duration of each req/s run, after warmupMs. */
  durationMs: number;
  warmupMs: number;
  connections: number;
  loadgen: Loadgen;
  curlRuns: number;
  /** Alternating rounds per mirror of each req/s run; the best is kept. */
  rounds: number;
  /** Before starting, wait up to this long for other processes to leave the CPU alone (0: don't). */
  waitIdleMs: number;
  /** Whole-run deadline; past it the bench stops everything and exits 1. */
  deadlineMs: number;
};

export const USAGE = `usage: node bench/run.ts [--quick] [options]

  --quick                 small sizes (16 MiB blobs, 4 and 10 clients, 24 MiB image); about a minute
  --bandwidth SIZE        simulated WAN bytes/s per mirror forwarder   (env BENCH_BANDWIDTH, default 100MB)
  --latency-ms N          simulated WAN latency per request            (env BENCH_LATENCY_MS, default 20)
  --blob-size SIZE        big blob size                                 (default 100MiB, quick 16MiB)
  --clients N[,N...]      cold concurrency levels                       (default 20,50, quick 4,10)
  --image-size SIZE       skopeo image size (sum of layers)             (default 150MiB, quick 24MiB)
  --layers N              skopeo image layer count                      (default 5)
  --duration SECONDS      measured seconds per req/s run                (default 5, quick 2)
  --connections N         connections for req/s runs                    (default 64)
  --rounds N              alternating gantry/baseline rounds per req/s run, best kept (default 2)
  --curl-runs N           alternating curl runs per mirror, best kept   (default 3)
  --loadgen auto|wrk|undici  load generator for req/s runs              (env BENCH_LOADGEN, default auto:
                          wrk when installed, else an undici loop on a worker thread)
  --wait-idle SECONDS     first wait up to this long for other processes to go quiet
                          (< 0.15 cores for 3 s)                         (env BENCH_WAIT_IDLE, default 0)

SIZE accepts 100MB (10^6), 100MiB (2^20) or a plain byte count.`;

export class UsageError extends Error {}

function size(v: string | undefined, name: string, fallback: number): number {
  if (v === undefined || v === '') return fallback;
  const n = parseSize(v);
  if (n === undefined || n <= 0) throw new UsageError(`${name}: expected a size such as 100MB or 100MiB, got ${JSON.stringify(v)}`);
  return n;
}

function int(v: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name}: expected an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** Parse flags strictly (an unknown one is a UsageError); `str(name)` reads a string flag. */
function flagsOf(argv: string[], options: FlagSpec): { values: Record<string, string | boolean | undefined>; str: (k: string) => string | undefined } {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, options }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return { values, str: (k) => (typeof values[k] === 'string' ? values[k] : undefined) };
}

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions | 'help' {
  const { values, str } = flagsOf(argv, {
    quick: { type: 'boolean' },
    bandwidth: { type: 'string' },
    'latency-ms': { type: 'string' },
    'blob-size': { type: 'string' },
    clients: { type: 'string' },
    'image-size': { type: 'string' },
    layers: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    loadgen: { type: 'string' },
    'wait-idle': { type: 'string' },
    rounds: { type: 'string' },
    'curl-runs': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values['help'] === true) return 'help';
  const quick = values['quick'] === true;
  const MiB = 2 ** 20;

  const clientsRaw = str('clients');
  const clients = clientsRaw === undefined ? (quick ? [4, 10] : [20, 50]) : clientsRaw.split(',').map((c) => int(c.trim(), '--clients', 0, 1, 500));
  clients.sort((a, b) => a - b);
  if (clients.length === 0) throw new UsageError('--clients: expected at least one level');

  const loadgen = str('loadgen') ?? env['BENCH_LOADGEN'] ?? 'auto';
  if (loadgen !== 'auto' && loadgen !== 'wrk' && loadgen !== 'undici') throw new UsageError(`--loadgen: expected auto, wrk or undici, got ${JSON.stringify(loadgen)}`);

  const durationS = int(str('duration'), '--duration', quick ? 2 : 5, 1, 60);
  return {
    quick,
    bandwidth: size(str('bandwidth') ?? env['BENCH_BANDWIDTH'], '--bandwidth', 100e6),
    latencyMs: int(str('latency-ms') ?? env['BENCH_LATENCY_MS'], '--latency-ms', 20, 0, 5000),
    blobBytes: size(str('blob-size'), '--blob-size', (quick ? 16 : 100) * MiB),
    clients,
    imageBytes: size(str('image-size'), '--image-size', (quick ? 24 : 150) * MiB),
    layers: int(str('layers'), '--layers', 5, 1, 50),
    smallBlobBytes: MiB,
    durationMs: durationS * 1000,
    warmupMs: quick ? 500 : 1000,
    connections: int(str('connections'), '--connections', 64, 1, 1024),
    loadgen,
    curlRuns: int(str('curl-runs'), '--curl-runs', 3, 1, 20),
    rounds: int(str('rounds'), '--rounds', 2, 1, 10),
    waitIdleMs: int(str('wait-idle') ?? env['BENCH_WAIT_IDLE'], '--wait-idle', 0, 0, 600) * 1000,
    deadlineMs: (quick ? 4 : 20) * 60_000,
  };
}

// ---------------------------------------------------------------------------------------------
// bench/serve.ts: warm cache hits, Gantry vs nginx serving the same files

export type ServeOptions = {
  quick: boolean;
  /** Measured duration of each wrk run, after warmupMs. */
  durationMs: number;
  warmupMs: number;
  connections: number;
  /** Alternating gantry/nginx rounds of each wrk run; each server's best req/s is kept. */
  rounds: number;
  /** Alternating curl runs per server on the 100 MiB blob; the best is kept. */
  curlRuns: number;
  /** Before starting, wait up to this long for other processes to leave the CPU alone (0: don't). */
  waitIdleMs: number;
  /** Whole-run deadline; past it the bench stops everything and exits 1. */
  deadlineMs: number;
  /** Only the cases whose name contains one of these (all when empty); for profiling one path. */
  only: string[];
};

export const SERVE_USAGE = `usage: node bench/serve.ts [--quick] [options]     (npm run bench:serve -- [options])

Warm cache hits: Gantry (default log level) vs nginx (sendfile off) serving the same cached files.

  --quick                 2 s wrk runs (p99 over 2 s is not comparable to the targets: see bench/README.md)
  --duration SECONDS      measured seconds per wrk run                  (default 10, quick 2)
  --connections N         wrk connections                               (default 64)
  --rounds N              alternating gantry/nginx rounds per case, best req/s kept (default 1)
  --curl-runs N           alternating curl runs per server, best kept   (default 3)
  --wait-idle SECONDS     first wait up to this long for other processes to go quiet
                          (< 0.15 cores for 3 s)                         (env BENCH_WAIT_IDLE, default 0)
  --only TEXT[,TEXT]      only the cases whose name contains one of these (e.g. "1 MiB", manifest,
                          curl); with BENCH_GANTRY_NODE=<wrapper adding --cpu-prof>, profiles one path`;

export function parseServeOptions(argv: string[], env: NodeJS.ProcessEnv): ServeOptions | 'help' {
  const { values, str } = flagsOf(argv, {
    quick: { type: 'boolean' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    rounds: { type: 'string' },
    'curl-runs': { type: 'string' },
    'wait-idle': { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values['help'] === true) return 'help';
  const quick = values['quick'] === true;
  const only = (str('only') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const durationS = int(str('duration'), '--duration', quick ? 2 : 10, 1, 120);
  const rounds = int(str('rounds'), '--rounds', 1, 1, 10);
  const curlRuns = int(str('curl-runs'), '--curl-runs', 3, 1, 20);
  const waitIdleMs = int(str('wait-idle') ?? env['BENCH_WAIT_IDLE'], '--wait-idle', 0, 0, 600) * 1000;
  // 4 wrk cases x 2 servers x rounds x (1 s warm-up + the run + wrk's start and stop), curl, set-up.
  const deadlineMs = 8 * rounds * (durationS + 4) * 1000 + curlRuns * 2 * 20_000 + waitIdleMs + 4 * 60_000;
  return {
    quick,
    durationMs: durationS * 1000,
    warmupMs: 1000,
    connections: int(str('connections'), '--connections', 64, 1, 1024),
    rounds,
    curlRuns,
    waitIdleMs,
    deadlineMs,
    only,
  };
}

// ---------------------------------------------------------------------------------------------
// bench/cluster.ts: one node vs three nodes sharing a cache (Redis leases, S3 shared tier)

export type ClusterOptions = {
  quick: boolean;
  /** Size of each cold blob (one for the 1-node run, another for the 3-node run). */
  blobBytes: number;
  /** Concurrent clients of each cold run (spread round-robin over the nodes in the 3-node run). */
  clients: number;
  /** Simulated WAN: response-body bytes per second through the one forwarder all nodes share. */
  bandwidth: number;
  /** Simulated WAN: delay added before each request is forwarded. */
  latencyMs: number;
  /** Size of the warm blob of the req/s runs. */
  smallBlobBytes: number;
  /** Measured duration of each req/s run, after warmupMs. */
  durationMs: number;
  warmupMs: number;
  connections: number;
  loadgen: Loadgen;
  /** Before starting, wait up to this long for other processes to leave the CPU alone (0: don't). */
  waitIdleMs: number;
  /** The nodes share an S3 tier (false: Redis and the peer endpoint only, for diagnosis). */
  s3: boolean;
  /** Whole-run deadline; past it the bench stops everything and exits 1. */
  deadlineMs: number;
};

export const CLUSTER_USAGE = `usage: node bench/cluster.ts [--quick] [options]     (npm run bench:cluster -- [options])

One Gantry node, then three sharing a cache (Redis fill leases, S3 shared tier), on a cold blob
with the same clients; then warm req/s on one node and on the three behind nginx (round-robin).

  --quick                 16 MiB blobs, 6 clients, 2 s req/s runs; about a minute
  --blob-size SIZE        cold blob size                                (default 100MiB, quick 16MiB)
  --clients N             concurrent clients per cold run, >= 3        (default 30, quick 6)
  --bandwidth SIZE        simulated WAN bytes/s, shared by every node   (env BENCH_BANDWIDTH, default 25MB)
  --latency-ms N          simulated WAN latency per request            (env BENCH_LATENCY_MS, default 20)
  --duration SECONDS      measured seconds per req/s run                (default 5, quick 2)
  --connections N         connections for req/s runs                    (default 64)
  --loadgen auto|wrk|undici  load generator for req/s runs              (env BENCH_LOADGEN, default auto:
                          wrk when installed, else an undici loop on a worker thread)
  --wait-idle SECONDS     first wait up to this long for other processes to go quiet
                          (< 0.15 cores for 3 s)                         (env BENCH_WAIT_IDLE, default 0)
  --no-s3                 no shared tier: the nodes share fills through Redis and the peer endpoint
                          only (diagnosis: a filling node's download waits for its S3 upload)

SIZE accepts 100MB (10^6), 100MiB (2^20) or a plain byte count.`;

export function parseClusterOptions(argv: string[], env: NodeJS.ProcessEnv): ClusterOptions | 'help' {
  const { values, str } = flagsOf(argv, {
    quick: { type: 'boolean' },
    'blob-size': { type: 'string' },
    clients: { type: 'string' },
    bandwidth: { type: 'string' },
    'latency-ms': { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    loadgen: { type: 'string' },
    'wait-idle': { type: 'string' },
    'no-s3': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values['help'] === true) return 'help';
  const quick = values['quick'] === true;
  const MiB = 2 ** 20;
  const loadgen = str('loadgen') ?? env['BENCH_LOADGEN'] ?? 'auto';
  if (loadgen !== 'auto' && loadgen !== 'wrk' && loadgen !== 'undici') throw new UsageError(`--loadgen: expected auto, wrk or undici, got ${JSON.stringify(loadgen)}`);
  // At least one client per node, or the 3-node run has a node nobody asks.
  const clients = int(str('clients'), '--clients', quick ? 6 : 30, 3, 500);
  const blobBytes = size(str('blob-size'), '--blob-size', (quick ? 16 : 100) * MiB);
  const bandwidth = size(str('bandwidth') ?? env['BENCH_BANDWIDTH'], '--bandwidth', 25e6);
  const durationS = int(str('duration'), '--duration', quick ? 2 : 5, 1, 60);
  const waitIdleMs = int(str('wait-idle') ?? env['BENCH_WAIT_IDLE'], '--wait-idle', 0, 0, 600) * 1000;
  // Two cold runs (the blob over the WAN, then every body hashed by the clients' thread at a
  // pessimistic 100 MB/s), three req/s runs with their warm-ups, and the set-up (Swift takes ~10 s).
  const coldMs = 2 * ((blobBytes / bandwidth) * 3000 + ((clients * blobBytes) / 100e6) * 1000);
  const deadlineMs = Math.ceil(coldMs + 3 * (durationS + 15) * 1000 + waitIdleMs + 4 * 60_000);
  return {
    quick,
    blobBytes,
    clients,
    bandwidth,
    latencyMs: int(str('latency-ms') ?? env['BENCH_LATENCY_MS'], '--latency-ms', 20, 0, 5000),
    smallBlobBytes: MiB,
    durationMs: durationS * 1000,
    warmupMs: quick ? 500 : 1000,
    connections: int(str('connections'), '--connections', 64, 1, 1024),
    loadgen,
    waitIdleMs,
    s3: values['no-s3'] !== true,
    deadlineMs,
  };
}
