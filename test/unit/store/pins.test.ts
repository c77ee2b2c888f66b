// Pins: images kept out of eviction (watermarks and maximum age), over a real store and index.
import { afterEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { digestOf, type Digest } from '../../../src/oci/digest.ts';
import { createLogger } from '../../../src/observability/logger.ts';
import { createMetrics, type Metrics } from '../../../src/observability/metrics.ts';
import { FsBlobStore } from '../../../src/store/blob-store.ts';
import { ContentCache, type IngestMeta } from '../../../src/store/content-cache.ts';
import { LevelIndexStore, type PinRecord } from '../../../src/store/index-store.ts';

const meta: IngestMeta = { kind: 'blob', mediaType: 'application/octet-stream', upstream: 'docker.io', repo: 'site/app', restricted: false };

type Harness = { cache: ContentCache; metrics: Metrics; warnings: string[]; reopen(opts?: Partial<Opts>): Promise<Harness> };
type Opts = { maxBytes: number; maxUnusedAgeSeconds: number };

const dirs: string[] = [];
const open: ContentCache[] = [];
afterEach(async () => {
  mock.timers.reset();
  for (const c of open.splice(0)) await c.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function start(opts: Opts, dir?: string): Promise<Harness> {
  const root = dir ?? (await mkdtemp(path.join(tmpdir(), 'gantry-pins-')));
  if (!dir) dirs.push(root);
  const warnings: string[] = [];
  const log = createLogger('warn', { write: (line: string) => void warnings.push(String((JSON.parse(line) as { msg: string }).msg)) });
  const metrics = createMetrics();
  const cache = new ContentCache({
    files: new FsBlobStore(root), index: new LevelIndexStore(path.join(root, 'index')),
    maxBytes: opts.maxBytes, lowWatermarkPercent: 90, maxUnusedAgeSeconds: opts.maxUnusedAgeSeconds, metrics, log,
  });
  await cache.init();
  open.push(cache);
  return {
    cache, metrics, warnings,
    async reopen(next = {}) {
      await cache.close();
      open.splice(open.indexOf(cache), 1);
      return start({ ...opts, ...next }, root);
    },
  };
}

async function put(cache: ContentCache, size: number): Promise<Digest> {
  const bytes = randomBytes(size);
  const d = digestOf(bytes);
  await cache.ingestBytes(d, bytes, meta);
  return d;
}

function pinOf(reference: string, digests: Digest[]): PinRecord {
  return { upstream: 'docker.io', repo: 'site/app', reference, digests, pinnedAt: Date.now() };
}

async function gauge(metrics: Metrics, name: string): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return Number(m?.values[0]?.value ?? NaN);
}

describe('pins', () => {
  test('a pinned image survives eviction under a budget smaller than the cache; the LRU takes unpinned content instead', async () => {
    const h = await start({ maxBytes: 8_000, maxUnusedAgeSeconds: 0 });
    const a = await put(h.cache, 2_000);
    const b = await put(h.cache, 2_000);
    await h.cache.pin(pinOf('v1', [a, b]));
    const c = await put(h.cache, 3_000);
    const d = await put(h.cache, 3_000); // 10,000 bytes > 8,000: evict down to 7,200
    assert.ok(h.cache.peek(a) && h.cache.peek(b), 'the pinned image stays, although it is the least recently used');
    assert.equal(h.cache.peek(c), undefined, 'the oldest unpinned entry went');
    assert.ok(h.cache.peek(d));
    assert.equal(await gauge(h.metrics, 'gantry_pinned_bytes'), 4_000);
    assert.equal(await gauge(h.metrics, 'gantry_pinned_images'), 1);
    assert.deepEqual(h.cache.pins().map((p) => [p.reference, p.cachedDigests, p.bytes]), [['v1', 2, 4_000]]);
  });

  test('unpinning makes the content evictable again', async () => {
    const h = await start({ maxBytes: 8_000, maxUnusedAgeSeconds: 0 });
    const a = await put(h.cache, 3_000);
    await h.cache.pin(pinOf('v1', [a]));
    await put(h.cache, 3_000);
    assert.equal(await h.cache.unpin('docker.io', 'site/app', 'v2'), false, 'no such pin');
    assert.equal(await h.cache.unpin('docker.io', 'site/app', 'v1'), true);
    await put(h.cache, 3_000);
    assert.equal(h.cache.peek(a), undefined, 'evicted once unpinned');
    assert.equal(await gauge(h.metrics, 'gantry_pinned_bytes'), 0);
  });

  test('digests pinned before they are cached are kept once they arrive; a shared digest stays pinned while any pin names it', async () => {
    const h = await start({ maxBytes: 6_000, maxUnusedAgeSeconds: 0 });
    const bytes = randomBytes(2_500);
    const later = digestOf(bytes);
    const shared = await put(h.cache, 1_000);
    await h.cache.pin(pinOf('v1', [later, shared]));
    await h.cache.pin(pinOf('v2', [shared]));
    assert.equal(h.cache.pins().find((p) => p.reference === 'v1')?.cachedDigests, 1);
    await h.cache.ingestBytes(later, bytes, meta);
    assert.equal(await gauge(h.metrics, 'gantry_pinned_bytes'), 3_500);
    await h.cache.unpin('docker.io', 'site/app', 'v1');
    assert.ok(h.cache.isPinned(shared), 'v2 still pins it');
    assert.ok(!h.cache.isPinned(later));
    for (let i = 0; i < 3; i++) await put(h.cache, 2_000);
    assert.equal(h.cache.peek(later), undefined);
    assert.ok(h.cache.peek(shared));
  });

  test('pins survive a restart, and the maximum unused age spares pinned content', async () => {
    mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    let h = await start({ maxBytes: 0, maxUnusedAgeSeconds: 0 });
    const a = await put(h.cache, 1_000);
    const b = await put(h.cache, 1_000);
    await h.cache.pin(pinOf('v1', [a]));
    mock.timers.tick(3_600_000);
    h = await h.reopen({ maxUnusedAgeSeconds: 60 }); // start-up sweeps what is older than a minute
    assert.ok(h.cache.peek(a), 'pinned: kept');
    assert.equal(h.cache.peek(b), undefined, 'unpinned and unused for an hour: evicted');
    assert.deepEqual(h.cache.pins().map((p) => p.reference), ['v1']);
  });

  test('pinned content alone over the budget: one warning, it is all kept, and the cache keeps serving', async () => {
    const h = await start({ maxBytes: 3_000, maxUnusedAgeSeconds: 0 });
    const [bytesA, bytesB] = [randomBytes(2_000), randomBytes(2_000)];
    const [a, b] = [digestOf(bytesA), digestOf(bytesB)];
    await h.cache.pin(pinOf('v1', [a, b])); // pinned first, as a prefetch or import with a pin does
    await h.cache.ingestBytes(a, bytesA, meta);
    await h.cache.ingestBytes(b, bytesB, meta);
    const c = await put(h.cache, 500);
    await put(h.cache, 500);
    assert.ok(h.cache.peek(a) && h.cache.peek(b));
    assert.equal(h.cache.peek(c), undefined, 'unpinned content still goes');
    assert.ok((await h.cache.readWhole(a))?.bytes.length === 2_000, 'still served');
    assert.equal(h.warnings.filter((w) => w.includes('pinned content alone exceeds the cache budget')).length, 1);
  });
});

describe('releases are remembered (for nodes sharing pins)', () => {
  test('unpin records when, survives a restart, and is told to listeners; a pin is told too', async () => {
    let h = await start({ maxBytes: 1 << 20, maxUnusedAgeSeconds: 0 });
    const told: string[] = [];
    h.cache.onPinChange(() => told.push('changed'));
    const d = await put(h.cache, 100);
    await h.cache.pin(pinOf('v1', [d]));
    assert.equal(await h.cache.unpin('docker.io', 'site/app', 'v1', 1234), true);
    assert.equal(await h.cache.unpin('docker.io', 'site/app', 'v1'), false, 'nothing left to release');
    assert.deepEqual(told, ['changed', 'changed']);
    h = await h.reopen();
    assert.deepEqual(await h.cache.unpinned(1234 + 1000), [{ upstream: 'docker.io', repo: 'site/app', reference: 'v1', unpinnedAt: 1234 }]);
  });

  test('a release older than 30 days is forgotten when read', async () => {
    const h = await start({ maxBytes: 1 << 20, maxUnusedAgeSeconds: 0 });
    await h.cache.pin(pinOf('old', []));
    await h.cache.unpin('docker.io', 'site/app', 'old', 1000);
    assert.equal((await h.cache.unpinned(1000 + 29 * 24 * 3600 * 1000)).length, 1);
    assert.equal((await h.cache.unpinned(1000 + 31 * 24 * 3600 * 1000)).length, 0);
    assert.equal((await h.cache.unpinned(0)).length, 0, 'deleted, not just hidden');
  });
});
