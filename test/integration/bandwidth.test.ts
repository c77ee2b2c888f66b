// upstreamMaxBytesPerSecond: a site's uplink is never taken whole. A fill from a real registry
// under a limit cannot finish faster than the limit allows, and the waits are counted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { gzipSync } from 'node:zlib';
import { buildImage, pushBlob, pushImage, randomBlob, sha256 } from '../fixtures/images.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const MB = 1_000_000;

describe('upstream bandwidth limits', () => {
  let registry: UpstreamRegistry;
  const blob = randomBlob(4 * 1024 * 1024, 'bandwidth');
  const other = randomBlob(2 * 1024 * 1024, 'bandwidth-other');
  /** An image with one 4 MiB layer, for prefetch (which starts from a manifest). */
  const image = buildImage({ format: 'oci', seed: 'bandwidth-prefetch', layers: [gzipSync(randomBlob(4 * 1024 * 1024, 'bandwidth-layer').bytes, { level: 0 })] });

  before(async () => {
    registry = await startUpstreamRegistry();
    await pushBlob(registry.url, 'site/app', blob);
    await pushBlob(registry.url, 'site/app', other);
    await pushImage(registry.url, 'site/prefetched', 'v1', image);
  });
  after(() => registry?.stop());

  async function timedGet(mirror: Mirror, digest: string): Promise<{ seconds: number; body: Buffer }> {
    const started = performance.now();
    const res = await request(`${mirror.url}/v2/site/app/blobs/${digest}`);
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200);
    return { seconds: (performance.now() - started) / 1000, body };
  }

  test('a global limit of 2MB/s: a 4 MiB fill takes at least (size - burst) / rate, and the wait is counted', async () => {
    const mirror = await startMirror({ upstreams: [{ host: registry.host, url: registry.url }], upstreamMaxBytesPerSecond: '2MB' });
    try {
      const { seconds, body } = await timedGet(mirror, blob.digest);
      assert.equal(sha256(body), blob.digest);
      const floor = (blob.bytes.length - 0.2 * MB) / (2 * MB); // the burst is a tenth of a second of the rate
      assert.ok(seconds >= floor, `4 MiB in ${seconds.toFixed(2)} s; the limit allows no less than ${floor.toFixed(2)} s`);
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_max_bytes_per_second', { limit: 'global' }), 2 * MB);
      assert.ok((await metricValue(mirror.url, 'gantry_upstream_throttled_seconds_total', { limit: 'global', priority: 'client' })) > 1);
    } finally {
      await mirror.destroy();
    }
  });

  test('a per-upstream limit applies to that upstream; without one a fill is not paced', async () => {
    const limited = await startMirror({ upstreams: [{ host: registry.host, url: registry.url, maxBytesPerSecond: '4MB' }] });
    try {
      const { seconds } = await timedGet(limited, other.digest);
      const floor = (other.bytes.length - 0.4 * MB) / (4 * MB);
      assert.ok(seconds >= floor, `2 MiB in ${seconds.toFixed(2)} s; the limit allows no less than ${floor.toFixed(2)} s`);
      assert.equal(await metricValue(limited.url, 'gantry_upstream_max_bytes_per_second', { limit: registry.host }), 4 * MB);
    } finally {
      await limited.destroy();
    }
    const free = await startMirror({ upstreams: [{ host: registry.host, url: registry.url }] });
    try {
      await timedGet(free, other.digest);
      assert.equal(await metricValue(free.url, 'gantry_upstream_throttled_seconds_total'), 0, 'no limit, no waits');
    } finally {
      await free.destroy();
    }
  });

  test('under a limit, a prefetch gets only what client fills leave: it all but pauses while a client waits, and its waits are counted', async () => {
    const mirror = await startMirror({ upstreams: [{ host: registry.host, url: registry.url }], upstreamMaxBytesPerSecond: '2MB' });
    try {
      const submitted = await request(`${mirror.url}/admin/prefetch`, { method: 'POST', body: JSON.stringify({ images: [`${registry.host}/site/prefetched:v1`] }) });
      assert.equal(submitted.statusCode, 202);
      const { id } = (await submitted.body.json()) as { id: string };
      const progress = async (): Promise<{ state: string; bytesDone: number }> => {
        const job = (await (await request(`${mirror.url}/admin/prefetch/${id}`)).body.json()) as { state: string; images: Array<{ bytesDone: number }> };
        return { state: job.state, bytesDone: job.images[0]?.bytesDone ?? 0 };
      };
      // Alone, the prefetch takes the whole limit.
      const before = await waitFor('the prefetch to be under way', async () => {
        const p = await progress();
        return p.bytesDone >= 512 * 1024 ? p : undefined;
      }, { timeoutMs: 10_000, intervalMs: 20 });
      const { body } = await timedGet(mirror, other.digest);
      assert.equal(sha256(body), other.digest);
      const during = (await progress()).bytesDone - before.bytesDone;
      // An even share would have given the prefetch as much as the client (2 MiB).
      assert.ok(during < other.bytes.length / 4, `the prefetch moved ${during} bytes while the client's 2 MiB fill ran`);
      const done = await waitFor('the prefetch to finish', async () => {
        const p = await progress();
        return p.state === 'done' || p.state === 'failed' ? p : undefined;
      }, { timeoutMs: 20_000, intervalMs: 100 });
      assert.equal(done.state, 'done');
      // A wait is counted when it ends: the prefetch's long one ended after the client's fill.
      assert.ok((await metricValue(mirror.url, 'gantry_upstream_throttled_seconds_total', { limit: 'global', priority: 'background' })) > 0.5);
      assert.ok((await metricValue(mirror.url, 'gantry_upstream_throttled_seconds_total', { limit: 'global', priority: 'client' })) > 0.5);
    } finally {
      await mirror.destroy();
    }
  });
});
