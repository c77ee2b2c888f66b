// upstreamMaxBytesPerSecond: a site's uplink is never taken whole. A fill from a real registry
// under a limit cannot finish faster than the limit allows, and the waits are counted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { pushBlob, randomBlob, sha256 } from '../fixtures/images.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const MB = 1_000_000;

describe('upstream bandwidth limits', () => {
  let registry: UpstreamRegistry;
  const blob = randomBlob(4 * 1024 * 1024, 'bandwidth');
  const other = randomBlob(2 * 1024 * 1024, 'bandwidth-other');

  before(async () => {
    registry = await startUpstreamRegistry();
    await pushBlob(registry.url, 'site/app', blob);
    await pushBlob(registry.url, 'site/app', other);
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
});
