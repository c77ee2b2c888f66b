import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import type { DestinationStream } from 'pino';
import type { Config } from './config/config.ts';
import { createApp } from './http/app.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { AccessGuard } from './proxy/access-guard.ts';
import { PullThroughBlobs } from './proxy/blobs.ts';
import { PassthroughListings } from './proxy/listings.ts';
import { PullThroughManifests } from './proxy/manifests.ts';
import { FsBlobStore } from './store/blob-store.ts';
import { ContentCache } from './store/content-cache.ts';
import { LevelIndexStore } from './store/index-store.ts';
import { UpstreamClient } from './upstream/client.ts';
import { Upstreams } from './upstream/upstreams.ts';
import { GantryTokens } from './auth/gantry-tokens.ts';
import { Htpasswd } from './auth/htpasswd.ts';

export type Gantry = {
  /** `http://host:port` actually bound (port 0 resolved). */
  url: string;
  port: number;
  metrics: Metrics;
  log: Logger;
  close(): Promise<void>;
};

const MAX_REQUEST_HEADER_BYTES = 16 * 1024;

/** Build every service from a Config and start listening. The only place real dependencies are wired. */
export async function startGantry(config: Config, opts: { logDestination?: DestinationStream } = {}): Promise<Gantry> {
  const log = createLogger(config.logLevel, opts.logDestination);
  const metrics = createMetrics();
  const shutdown = new AbortController();
  const root = resolve(config.cacheDir);
  const cache = new ContentCache({
    files: new FsBlobStore(root),
    index: new LevelIndexStore(join(root, 'index')),
    maxBytes: config.maxCacheBytes,
    lowWatermarkPercent: config.cacheLowWatermarkPercent,
    maxUnusedAgeSeconds: config.maxUnusedAgeSeconds,
    metrics,
    log,
  });
  await cache.init();
  metrics.cacheMaxBytes.set(config.maxCacheBytes);

  const upstreams = new Upstreams(
    config.upstreams.map(
      (u) =>
        new UpstreamClient({
          config: u,
          headersTimeoutMs: config.upstreamHeadersTimeoutMs,
          bodyTimeoutMs: config.upstreamBodyTimeoutMs,
          breaker: config.breaker,
          proxy: config.proxy,
          metrics,
          log,
        }),
    ),
    config,
  );
  const ttlByHost = new Map(config.upstreams.map((u) => [u.host, (u.tagTtlSeconds ?? config.tagTtlSeconds) * 1000]));
  const guard = new AccessGuard({ ttlSeconds: config.auth.accessCheckTtlSeconds, failClosed: config.auth.failClosed, metrics, log });
  const blobs = new PullThroughBlobs({
    cache, guard, metrics, log,
    fillTimeoutMs: config.cacheWriteTimeoutMs,
    shutdown: shutdown.signal,
    maxConcurrentFills: config.maxConcurrentFills,
    fillQueueTimeoutMs: config.fillQueueTimeoutMs,
    fillResumeAttempts: config.fillResumeAttempts,
    diskErrorBackoffMs: config.diskErrorBackoffSeconds * 1000,
  });
  const manifests = new PullThroughManifests({
    cache, guard, metrics, log, maxBytes: config.maxManifestBytes,
    tagTtlMs: (host) => ttlByHost.get(host) ?? config.tagTtlSeconds * 1000,
  });
  let ready = true;
  const app = createApp({
    upstreams, blobs, manifests, metrics, log,
    listings: new PassthroughListings({ maxBytes: config.maxManifestBytes }),
    authConfig: config.auth,
    tokens: new GantryTokens(config.auth.tokenTtlSeconds),
    htpasswd: config.auth.htpasswdFile ? Htpasswd.load(config.auth.htpasswdFile) : undefined,
    isReady: () => ready,
    verifyCache: (o) => cache.verifyAll(o),
    adminRemote: config.adminRemote,
  });

  const server = await new Promise<ServerType>((resolveServer, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname: config.listen.host,
        port: config.listen.port,
        serverOptions: { maxHeaderSize: MAX_REQUEST_HEADER_BYTES, requestTimeout: 60_000, headersTimeout: 30_000 },
      },
      () => resolveServer(s),
    );
    s.once('error', reject);
  });
  // With no 'timeout' listener on the server, Node destroys a socket idle for that long.
  server.setTimeout(config.clientIdleTimeoutMs);
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  log.info({ listen: `${host}:${addr.port}`, cacheDir: root, upstreams: config.upstreams.map((u) => `${u.host}=${u.url}`) }, 'gantry listening');

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${addr.port}`,
    port: addr.port,
    metrics,
    log,
    close() {
      closing ??= (async () => {
        ready = false;
        shutdown.abort();
        await new Promise<void>((r) => {
          server.close(() => r());
          if ('closeAllConnections' in server) server.closeAllConnections();
        });
        await upstreams.close();
        await cache.close();
        log.info('gantry stopped');
      })();
      return closing;
    },
  };
}
