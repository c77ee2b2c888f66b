// Real parts for unit tests of proxy/ and upstream/: an UpstreamClient whose
// network is undici's MockAgent, and a real ContentCache in a temp directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MockAgent, type MockPool } from 'undici';
import type { UpstreamConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMetrics, type Metrics } from '../../src/observability/metrics.ts';
import { FsBlobStore } from '../../src/store/blob-store.ts';
import type { BlobStore } from '../../src/store/blob-store-api.ts';
import type { ChunkSource } from '../../src/store/chunk-source.ts';
import { ContentCache } from '../../src/store/content-cache.ts';
import { LevelIndexStore } from '../../src/store/index-store.ts';
import { UpstreamClient } from '../../src/upstream/client.ts';

export const UPSTREAM_URL = 'http://registry.test';
export const silent = createLogger('silent');

export type MockedUpstream = { agent: MockAgent; pool: MockPool; client: UpstreamClient; metrics: Metrics; close(): Promise<void> };

export function mockUpstream(config: Partial<UpstreamConfig> = {}): MockedUpstream {
  const agent = new MockAgent();
  agent.disableNetConnect();
  const metrics = createMetrics();
  const client = new UpstreamClient({
    config: { host: 'registry.test', url: UPSTREAM_URL, ...config },
    headersTimeoutMs: 5_000,
    bodyTimeoutMs: 5_000,
    breaker: { failureThreshold: 1000, cooldownSeconds: 30, probeIntervalSeconds: 0, trialTimeoutSeconds: 10 },
    proxy: {},
    metrics,
    log: silent,
    dispatcher: agent,
  });
  return { agent, pool: agent.get(UPSTREAM_URL), client, metrics, close: () => client.close() };
}

export type TempCache = { cache: ContentCache; store: FsBlobStore; dir: string; metrics: Metrics; close(): Promise<void> };

/** A real cache (files + LevelDB) in a fresh directory; `wrap` can put a fault in front of its store. */
export async function tempCache(wrap: (store: BlobStore) => BlobStore = (s) => s): Promise<TempCache> {
  const dir = await mkdtemp(path.join(tmpdir(), 'gantry-unit-cache-'));
  const store = new FsBlobStore(dir);
  const metrics = createMetrics();
  const cache = new ContentCache({ files: wrap(store), index: new LevelIndexStore(path.join(dir, 'index')), maxBytes: 0, metrics, log: silent });
  await cache.init();
  return {
    cache, store, dir, metrics,
    async close() {
      await cache.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Run `fn` on a fresh temp cache, closed and removed after, also when `fn` throws. */
export async function withTempCache(fn: (c: TempCache) => Promise<void>): Promise<void> {
  const c = await tempCache();
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

/** Everything a body holds: a Buffer, or a ChunkSource read to its end (then closed). */
export async function readBody(body: Buffer | ChunkSource): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body;
  const buf = Buffer.allocUnsafe(64 * 1024);
  const parts: Buffer[] = [];
  try {
    for (let c = await body.read(buf); c !== null; c = await body.read(buf)) parts.push(Buffer.from(c));
  } finally {
    body.close();
  }
  return Buffer.concat(parts);
}

/** A clock tests move by hand. */
export function manualClock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}
