// Faults: cut and stalled upstream bodies (resumed with Range), a full disk
// (a real, tiny tmpfs), the fill limit, eviction watermarks and max age.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { request } from 'undici';
import { randomBlob, sha256, type Blob } from '../fixtures/images.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

type Behaviour = 'ok' | 'cut' | 'stall';

/** Serves blobs by digest; `plan` decides, per full GET, whether to cut or stall half-way. Ranges are honoured. */
function faultyUpstream(blobs: Blob[], plan: (attempt: number) => Behaviour) {
  const byDigest = new Map(blobs.map((b) => [b.digest, b.bytes]));
  let fullGets = 0;
  return startFakeUpstream(async (req, res) => {
    const digest = req.url?.split('/blobs/')[1] ?? '';
    const bytes = byDigest.get(digest);
    if (!bytes) {
      res.writeHead(404).end();
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      res.writeHead(206, { 'content-length': bytes.length - start, 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` });
      res.end(bytes.subarray(start));
      return;
    }
    const behaviour = plan(fullGets++);
    res.writeHead(200, { 'content-length': bytes.length });
    if (behaviour === 'ok') {
      res.end(bytes);
      return;
    }
    res.write(bytes.subarray(0, bytes.length >> 1));
    if (behaviour === 'cut') {
      await sleep(50);
      res.destroy();
    } // 'stall': never finish; Gantry's body timeout must notice
  });
}

async function pull(mirror: Mirror, b: Blob) {
  const res = await request(`${mirror.url}/v2/f/x/blobs/${b.digest}`);
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, ok: sha256(body) === b.digest, length: body.length };
}

describe('an upstream cut or stalled mid-blob', () => {
  for (const fault of ['cut', 'stall'] as const) {
    test(`${fault}: the fill resumes with a Range request and every attached client gets the whole blob`, async () => {
      const blob = randomBlob(2 * MiB, `resume-${fault}`);
      const upstream = await faultyUpstream([blob], (n) => (n === 0 ? fault : 'ok'));
      const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], upstreamBodyTimeoutMs: 300 });
      try {
        const results = await Promise.all([pull(mirror, blob), pull(mirror, blob), pull(mirror, blob)]);
        for (const r of results) {
          assert.equal(r.status, 200);
          assert.ok(r.ok, 'complete and correct, no error seen');
        }
        assert.equal(upstream.seen.filter((r) => r.headers.range === `bytes=${MiB}-`).length, 1, 'resumed exactly where it stopped');
        assert.equal(await metricValue(mirror.url, 'gantry_fill_resumes_total'), 1);
        assert.equal((await pull(mirror, blob)).cache, 'HIT');
      } finally {
        await mirror.destroy();
        await upstream.stop();
      }
    });
  }

  test('when it cannot be resumed, clients are aborted and nothing is cached', async () => {
    const blob = randomBlob(MiB, 'resume-never');
    const upstream = await faultyUpstream([blob], () => 'cut');
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], fillResumeAttempts: 0 });
    try {
      let aborted = 0;
      for (let i = 0; i < 2; i++) {
        const res = await request(`${mirror.url}/v2/f/x/blobs/${blob.digest}`).catch(() => undefined);
        if (!res || res.statusCode !== 200) {
          aborted++;
          await res?.body.dump();
          continue;
        }
        await res.body.arrayBuffer().then(
          () => assert.fail('a cut blob must not end cleanly'),
          () => aborted++,
        );
      }
      assert.equal(aborted, 2);
      const files = (await readdir(mirror.cacheDir, { recursive: true })).filter((f) => String(f).startsWith('blobs/sha256/'));
      assert.deepEqual(files.filter((f) => String(f).length > 20), [], 'no blob file');
      assert.equal(await metricValue(mirror.url, 'gantry_fills_total', { outcome: 'upstream_error' }), 2);
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });
});

describe('a full disk', () => {
  const mnt = join(tmpdir(), `gantry-tmpfs-${process.pid}`);
  after(async () => {
    await execFileP('umount', [mnt]).catch(() => undefined);
    await rm(mnt, { recursive: true, force: true });
  });

  test('misses are streamed without caching, it is logged and counted, and caching resumes when space returns', async () => {
    await mkdir(mnt, { recursive: true });
    await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt]); // a real, small filesystem (needs root)
    const blob = randomBlob(4 * MiB, 'disk-full');
    const upstream = await faultyUpstream([blob], () => 'ok');
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], diskErrorBackoffSeconds: 1 }, join(mnt, 'cache'));
    try {
      // The first attempt hits ENOSPC mid-fill: its client is cut off (or told 502), nothing is kept.
      const first = await pull(mirror, blob).catch(() => undefined);
      assert.ok(first === undefined || !first.ok, 'the first client never gets a complete body from a failed fill');
      assert.ok((await metricValue(mirror.url, 'gantry_cache_write_errors_total')) >= 1);
      assert.equal(await metricValue(mirror.url, 'gantry_cache_bypass'), 1);
      const bypassed = await pull(mirror, blob);
      assert.equal(bypassed.status, 200);
      assert.equal(bypassed.cache, 'BYPASS');
      assert.ok(bypassed.ok, 'served whole and verified, straight from the upstream');
      assert.deepEqual(await readdir(join(mnt, 'cache', 'tmp')), [], 'no partial file left behind');

      await execFileP('mount', ['-o', 'remount,size=64m', mnt]); // space returns
      await sleep(1_100); // past the 1 s backoff
      const recovered = await pull(mirror, blob);
      assert.equal(recovered.cache, 'MISS');
      assert.ok(recovered.ok);
      assert.equal((await pull(mirror, blob)).cache, 'HIT');
      assert.equal(await metricValue(mirror.url, 'gantry_cache_bypass'), 0);
    } finally {
      await mirror.close();
      await upstream.stop();
    }
  });
});

describe('limits and eviction', () => {
  test('beyond maxConcurrentFills a miss waits, then gets a 503 with Retry-After', async () => {
    const [slow, other] = [randomBlob(MiB, 'limit-slow'), randomBlob(1000, 'limit-other')] as [Blob, Blob];
    const upstream = await faultyUpstream([slow, other], (n) => (n === 0 ? 'stall' : 'ok'));
    const mirror = await startMirror({
      upstreams: [{ host: 'example.test', url: upstream.url }],
      maxConcurrentFills: 1, fillQueueTimeoutMs: 300, upstreamBodyTimeoutMs: 5_000, fillResumeAttempts: 0,
    });
    try {
      const stalled = request(`${mirror.url}/v2/f/x/blobs/${slow.digest}`).then((r) => r.body.arrayBuffer()).catch(() => undefined);
      await sleep(100);
      const t = performance.now();
      const res = await request(`${mirror.url}/v2/f/x/blobs/${other.digest}`);
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      assert.equal(res.statusCode, 503);
      assert.equal(res.headers['retry-after'], '5');
      assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
      assert.ok(performance.now() - t >= 250, 'it waited for a slot first');
      await mirror.close(); // ends the stalled fill
      await stalled;
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('eviction runs from the high to the low watermark, LRU first, and never cuts a blob being read', async () => {
    const [big, b1, b2, b3] = [randomBlob(4 * MiB, 'wm-big'), randomBlob(3 * MiB, 'wm-1'), randomBlob(3 * MiB, 'wm-2'), randomBlob(3 * MiB, 'wm-3')] as [Blob, Blob, Blob, Blob];
    const upstream = await faultyUpstream([big, b1, b2, b3], () => 'ok');
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], maxCacheBytes: 10 * MiB, cacheLowWatermarkPercent: 50 });
    const path = (x: Blob) => join(mirror.cacheDir, 'blobs', 'sha256', x.digest.slice(7, 9), x.digest.slice(7));
    try {
      await pull(mirror, big);
      // A slow reader of `big`: take the first chunk and pause.
      const res = await request(`${mirror.url}/v2/f/x/blobs/${big.digest}`, { highWaterMark: 64 * 1024 });
      const iter = res.body[Symbol.asyncIterator]();
      const firstChunk = (await iter.next()).value as Buffer;
      await pull(mirror, b1);
      await pull(mirror, b2); // 10 MiB: at the budget
      assert.equal(await metricValue(mirror.url, 'gantry_evictions_total'), 0);
      await pull(mirror, b3); // 13 MiB > 10: evict LRU (big, b1, b2) down to <= 5 MiB
      const deadline = Date.now() + 5_000;
      while (existsSync(path(b2)) && Date.now() < deadline) await sleep(10);
      assert.equal(await metricValue(mirror.url, 'gantry_evictions_total'), 3);
      assert.deepEqual([big, b1, b2, b3].map((x) => existsSync(path(x))), [false, false, false, true]);
      // The paused reader still gets every byte of the evicted blob.
      const chunks = [firstChunk];
      for (let r = await iter.next(); !r.done; r = await iter.next()) chunks.push(r.value as Buffer);
      assert.equal(sha256(Buffer.concat(chunks)), big.digest, 'a blob being read is never cut short');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('blobs unused for maxUnusedAgeSeconds are evicted', async () => {
    const blob = randomBlob(1000, 'max-age');
    const upstream = await faultyUpstream([blob], () => 'ok');
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], maxUnusedAgeSeconds: 1 });
    try {
      await pull(mirror, blob);
      const deadline = Date.now() + 5_000;
      while ((await metricValue(mirror.url, 'gantry_evictions_total')) < 1) {
        assert.ok(Date.now() < deadline, 'evicted within 5 s');
        await sleep(100);
      }
      assert.equal((await pull(mirror, blob)).cache, 'MISS');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });
});
