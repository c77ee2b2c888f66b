import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import type { DestinationStream } from 'pino';
import type { Config } from './config/config.ts';
import { createApp } from './http/app.ts';
import { createPublicServer, loadTls, tlsFilesOf } from './http/tls.ts';
import type { AppEnv } from './http/app-env.ts';
import { ServingProcesses, servingProcessCount } from './serving/supervisor.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { AccessGuard } from './proxy/access-guard.ts';
import { PullThroughBlobs } from './proxy/blobs.ts';
import { PassthroughListings } from './proxy/listings.ts';
import { tagTtlPolicy } from './proxy/tag-policy.ts';
import { PullThroughReferrers } from './proxy/referrers.ts';
import { PullThroughManifests } from './proxy/manifests.ts';
import { FsBlobStore } from './store/blob-store.ts';
import { ContentCache } from './store/content-cache.ts';
import { LevelIndexStore } from './store/index-store.ts';
import { CacheCatalog } from './store/catalog.ts';
import { S3Tier } from './store/s3-tier.ts';
import { Coordinator } from './cluster/coordinator.ts';
import { SharedPins } from './cluster/shared-pins.ts';
import { sealer } from './cluster/seal.ts';
import { redisRecencyIndex } from './cluster/recency-index.ts';
import { SharedJobs } from './prefetch/shared-jobs.ts';
import { S3Budget } from './store/s3-budget.ts';
import { hostname } from 'node:os';
import type { SharedTier } from './store/shared-tier.ts';
import { importStream } from './transfer/import-stream.ts';
import { PrefetchJobs } from './prefetch/jobs.ts';
import { createLimiter, UpstreamClient } from './upstream/client.ts';
import { Upstreams } from './upstream/upstreams.ts';
import { GantryTokens, type TokenStore } from './auth/gantry-tokens.ts';
import { Htpasswd } from './auth/htpasswd.ts';

/**
 * Everything Gantry is made of, built once from a Config: what serving, `gantry verify` and the
 * subcommands that need the cache without a listener (import, export, prefetch) share.
 */
export type Services = {
  config: Config;
  log: Logger;
  metrics: Metrics;
  cache: ContentCache;
  upstreams: Upstreams;
  guard: AccessGuard;
  blobs: PullThroughBlobs;
  manifests: PullThroughManifests;
  listings: PassthroughListings;
  referrers: PullThroughReferrers;
  tokens: GantryTokens;
  htpasswd: Htpasswd | undefined;
  /** Shared S3 tier and cluster coordination, when configured (for /readyz). */
  shared: SharedTier | undefined;
  cluster: { coordinator: Coordinator; peerToken: string } | undefined;
  /** Prefetch jobs, loaded from the index; they run once listen() starts them. */
  prefetch: PrefetchJobs;
  /** Aborts background work (fills) at once; close() does it too. */
  abort(): void;
  /** Aborts background work, then closes the upstream connections and the index. Idempotent. */
  close(): Promise<void>;
};

/** `logDestination`: where this process logs (tests); serving processes always log to stdout. */
export type ServicesOptions = { logDestination?: DestinationStream };

export type Gantry = {
  /** `http://host:port` actually bound (port 0 resolved). */
  url: string;
  port: number;
  metrics: Metrics;
  log: Logger;
  close(): Promise<void>;
};

const SERVER_OPTIONS = { maxHeaderSize: 16 * 1024, requestTimeout: 60_000, headersTimeout: 30_000 };

/**
 * The cache alone, for services and for offline commands; `init()` opens it and reconciles it
 * with the disk. Eviction follows config.maxCacheBytes and config.maxUnusedAgeSeconds.
 */
export function createCache(config: Config, deps: { metrics: Metrics; log: Logger }): ContentCache {
  const { metrics, log } = deps;
  const root = resolve(config.cacheDir);
  return new ContentCache({
    files: new FsBlobStore(root),
    index: new LevelIndexStore(join(root, 'index')),
    maxBytes: config.maxCacheBytes,
    lowWatermarkPercent: config.cacheLowWatermarkPercent,
    maxUnusedAgeSeconds: config.maxUnusedAgeSeconds,
    metrics,
    log,
  });
}

/** Gantry cannot start as configured (an unusable bucket): the CLI prints the message alone and exits 1. */
export class StartupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StartupError';
  }
}

/**
 * Coordination with the other nodes when `cluster.redis.url` is set. A Redis that is down at
 * start-up does not stop the node: it starts alone and joins when Redis answers (bounded wait).
 */
async function connectCluster(config: Config, deps: { metrics: Metrics; log: Logger }): Promise<{ coordinator: Coordinator; peerToken: string } | undefined> {
  const { redis, peerToken, advertiseUrl } = config.cluster;
  if (redis.url === undefined || peerToken === undefined || advertiseUrl === undefined) return undefined;
  const coordinator = new Coordinator({ url: redis.url, nodeId: nodeIdOf(config), advertiseUrl, ...deps });
  await coordinator.ready(REDIS_START_WAIT_MS);
  return { coordinator, peerToken };
}

const REDIS_START_WAIT_MS = 3_000;

/** Gantry's tokens in Redis for every node, sealed under the peer secret. */
function tokenStore(cluster: { coordinator: Coordinator; peerToken: string }): TokenStore {
  const { seal, open } = sealer(cluster.peerToken, 'tokens');
  return { put: (n, v, ttl) => cluster.coordinator.put(n, v, ttl), get: (n) => cluster.coordinator.get(n), seal, open };
}

/** This node's name among the nodes sharing a cache. */
export function nodeIdOf(config: Config): string {
  return config.cluster.nodeId ?? hostname();
}

/** Whose pins the shared tier's budget keeps: the cache's, kept in step with the cluster's when Redis is configured. */
type Pins = { cache: ContentCache; coordinator: Coordinator | undefined; shared: SharedPins | undefined };

/** The shared tier's budget: recency in Redis when the nodes have it, else oldest first from a listing. */
function s3Budget(tier: S3Tier, config: Config, pins: Pins, deps: { metrics: Metrics; log: Logger }): S3Budget {
  const { bucket, prefix, maxBytes, sweepSeconds } = config.storage.s3;
  const index = pins.coordinator ? redisRecencyIndex(pins.coordinator, `${bucket}/${prefix}`, nodeIdOf(config)) : undefined;
  const budget = new S3Budget({
    store: tier, index, maxBytes, lowWatermarkPercent: config.cacheLowWatermarkPercent, sweepMs: sweepSeconds * 1000,
    // The cache holds every pin of the cluster (SharedPins copies them in), whether or not it has the content.
    isPinned: (d) => pins.cache.isPinned(d),
    beforeSweep: () => pins.shared?.sync() ?? Promise.resolve(),
    ...deps,
  });
  tier.observe(budget);
  return budget;
}

/** The S3 tier when `storage.s3.bucket` is set, checked now: an unusable bucket stops the start. */
async function connectSharedTier(config: Config, deps: { metrics: Metrics; log: Logger }): Promise<SharedTier | undefined> {
  const { bucket } = config.storage.s3;
  if (bucket === undefined) return undefined;
  try {
    return await S3Tier.connect({ config: { ...config.storage.s3, bucket }, ...deps });
  } catch (err) {
    throw new StartupError((err as Error).message, { cause: err });
  }
}

/** Build every service from a Config, without listening. The only place real dependencies are wired. */
export async function createServices(config: Config, opts: ServicesOptions = {}): Promise<Services> {
  const log = createLogger(config.logLevel, opts.logDestination);
  const metrics = createMetrics();
  const shutdown = new AbortController();
  const cache = createCache(config, { metrics, log });
  await cache.init();
  metrics.cacheMaxBytes.set(config.maxCacheBytes);
  metrics.nodeInfo.set({ node: nodeIdOf(config) }, 1);

  const sharedLimiter = config.upstreamMaxBytesPerSecond > 0 ? createLimiter(config.upstreamMaxBytesPerSecond, 'global', metrics) : undefined;
  const upstreams = new Upstreams(
    config.upstreams.map(
      (u) =>
        new UpstreamClient({
          config: u,
          headersTimeoutMs: config.upstreamHeadersTimeoutMs,
          bodyTimeoutMs: config.upstreamBodyTimeoutMs,
          breaker: config.breaker,
          proxy: config.proxy,
          sharedLimiter,
          metrics,
          log,
        }),
    ),
    config,
  );
  const shared = await connectSharedTier(config, { metrics, log }).catch(async (err: unknown) => {
    await cache.close();
    throw err;
  });
  const cluster = await connectCluster(config, { metrics, log });
  const coordinator = cluster?.coordinator;
  const sharedPins = coordinator ? new SharedPins({ cache, redis: () => coordinator.client(), log }) : undefined;
  sharedPins?.start();
  const budget = shared instanceof S3Tier && config.storage.s3.maxBytes > 0 ? s3Budget(shared, config, { cache, coordinator, shared: sharedPins }, { metrics, log }) : undefined;
  budget?.start();
  const guard = new AccessGuard({ ttlSeconds: config.auth.accessCheckTtlSeconds, failClosed: config.auth.failClosed, metrics, log, records: cluster?.coordinator });
  const blobs = new PullThroughBlobs({
    cache, guard, metrics, log,
    fillTimeoutMs: config.cacheWriteTimeoutMs,
    shutdown: shutdown.signal,
    maxConcurrentFills: config.maxConcurrentFills,
    fillQueueTimeoutMs: config.fillQueueTimeoutMs,
    fillResumeAttempts: config.fillResumeAttempts,
    diskErrorBackoffMs: config.diskErrorBackoffSeconds * 1000,
    shared,
    cluster,
  });
  const manifests = new PullThroughManifests({
    cache, guard, metrics, log, maxBytes: config.maxManifestBytes,
    tagTtlMs: tagTtlPolicy(config),
    shared,
    records: cluster?.coordinator,
  });
  const referrers = new PullThroughReferrers({ manifests, guard, tagTtlMs: tagTtlPolicy(config), maxBytes: config.maxManifestBytes, log, records: cache.records('referrers') });
  await referrers.load();
  const listings = new PassthroughListings({ maxBytes: config.maxManifestBytes, catalog: new CacheCatalog({ cache, naming: (host, repo) => upstreams.clientNameOf(host, repo) }), guard, log });
  const tokens = new GantryTokens(config.auth.tokenTtlSeconds, cluster ? tokenStore(cluster) : undefined);
  const htpasswd = config.auth.htpasswdFile ? Htpasswd.load(config.auth.htpasswdFile) : undefined;
  const board = cluster ? new SharedJobs(cluster.coordinator, nodeIdOf(config), log) : undefined;
  const prefetch = new PrefetchJobs({ manifests, blobs, cache, store: cache.records('prefetch-jobs'), resolve: (ref) => upstreams.forImage(ref), metrics, log, board });
  await prefetch.load();

  let closing: Promise<void> | undefined;
  const abort = (): void => {
    // Prefetch first: the fills the shutdown cuts must read as interrupted, not failed.
    void prefetch.close();
    shutdown.abort();
  };
  return {
    config, log, metrics, cache, upstreams, guard, blobs, manifests, listings, referrers, tokens, htpasswd, prefetch, abort, shared, cluster,
    close() {
      closing ??= (async () => {
        abort();
        await prefetch.close();
        await upstreams.close();
        await budget?.close();
        await sharedPins?.close();
        await shared?.close();
        await cluster?.coordinator.close();
        await cache.close();
      })();
      return closing;
    },
  };
}

/** What /readyz says beyond ready: the shared parts a node can work without, and whether it has them. */
function readinessDetail(services: Services): string[] {
  const lines: string[] = [];
  if (services.cluster) lines.push(`redis: ${services.cluster.coordinator.connected ? 'up' : 'down (this node works alone)'}`);
  if (services.shared) lines.push(`s3: ${services.shared.up ? 'up' : 'down (this node works from its disk and the upstreams)'}`);
  return lines;
}

/** Serve the services over HTTP until close(); close() also closes the services. */
export async function listen(services: Services): Promise<Gantry> {
  const { config, upstreams, blobs, manifests, listings, referrers, metrics, log, cache } = services;
  let ready = true;
  const servingCount = servingProcessCount(config.workers);
  const tls = await publicTls(config, log);
  const serving = servingCount > 0 ? new ServingProcesses({ ...config, serverOptions: SERVER_OPTIONS, cache, metrics, log, onRead: (d) => services.shared?.used(d) }) : undefined;
  const app = createApp({
    upstreams, blobs, manifests, metrics, log,
    listings,
    referrers,
    authConfig: config.auth,
    servesHttps: tls !== undefined,
    tokens: services.tokens,
    htpasswd: services.htpasswd,
    isReady: () => ready,
    verifyCache: (o) => cache.verifyAll(o),
    adminRemote: config.adminRemote,
    exportSource: { cache, config },
    pinSource: { cache, config },
    imports: {
      upstreamHosts: () => upstreams.all().map((u) => u.host),
      defaultUpstream: config.defaultUpstream,
      importTar: (body, target, label) => importStream(body, cache, config.cacheDir, target, label),
    },
    adminToken: config.adminToken,
    prefetch: services.prefetch,
    metricsText: serving ? () => serving.metricsText() : undefined,
    peer: config.cluster.peerToken !== undefined ? { blobs, metrics, peerToken: config.cluster.peerToken } : undefined,
    readiness: () => readinessDetail(services),
  });

  const bound = serving ? await serveWithProcesses(serving, servingCount, app, config) : await serveAlone(app, config, tls);
  services.prefetch.start();
  log.info(
    { listen: `${bound.host}:${bound.port}`, workers: servingCount, cacheDir: resolve(config.cacheDir), upstreams: config.upstreams.map((u) => `${u.host}=${u.url}`) },
    'gantry listening',
  );

  let closing: Promise<void> | undefined;
  return {
    url: `${config.tls.certFile === undefined ? 'http' : 'https'}://${bound.host === '0.0.0.0' ? '127.0.0.1' : bound.host}:${bound.port}`,
    port: bound.port,
    metrics,
    log,
    close() {
      closing ??= (async () => {
        ready = false;
        services.abort();
        await bound.close();
        await services.close();
        log.info('gantry stopped');
      })();
      return closing;
    },
  };
}

type PublicTls = Parameters<typeof createPublicServer>[2];

/** The certificate to serve, read now so a bad one stops the start with one line. */
async function publicTls(config: Config, log: Logger): Promise<PublicTls> {
  const files = tlsFilesOf(config.tls);
  if (!files) return undefined;
  try {
    return { files, material: await loadTls(files), log };
  } catch (err) {
    throw new StartupError((err as Error).message, { cause: err });
  }
}

type Bound = { host: string; port: number; close(): Promise<void> };

/** This process alone on the public port. */
async function serveAlone(app: Hono<AppEnv>, config: Config, tls: PublicTls | undefined): Promise<Bound> {
  const listener = getRequestListener(app.fetch, { hostname: config.listen.host });
  const { server, stop } = createPublicServer(SERVER_OPTIONS, (req, res) => void listener(req, res), tls);
  await new Promise<void>((resolveServer, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolveServer();
    });
  });
  // With no 'timeout' listener on the server, Node destroys a socket idle for that long.
  server.setTimeout(config.clientIdleTimeoutMs);
  const addr = server.address() as AddressInfo;
  return {
    host: addr.family === 'IPv6' ? `[${addr.address}]` : addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((r) => {
        stop();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** Serving processes on the public port; this process answers what they forward (src/serving/). */
async function serveWithProcesses(serving: ServingProcesses, count: number, app: Hono<AppEnv>, config: Config): Promise<Bound> {
  const listener = getRequestListener(app.fetch, { hostname: config.listen.host });
  const port = await serving.start(count, (req, res) => void listener(req, res));
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  return { host, port, close: () => serving.stop() };
}

/** Build every service from a Config and start listening. */
export async function startGantry(config: Config, opts: ServicesOptions = {}): Promise<Gantry> {
  const services = await createServices(config, opts);
  try {
    return await listen(services);
  } catch (err) {
    // The port was taken (or similar): release the index lock rather than leave it held.
    await services.close();
    throw err;
  }
}
