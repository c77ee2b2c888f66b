// A fill whose cache write cannot even start (the temp file can't be created:
// EMFILE, EACCES, a broken tmp directory): every client that asked for the blob
// is still served, each by its own verified stream straight from the upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { pushBlob, randomBlob, sha256 } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const CLIENTS = 5;
const BACKOFF_SECONDS = 1;

let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let mirror: Mirror;
const blob = randomBlob(3 * 1024 * 1024, 'unwritable-tmp');
const url = (): string => `${mirror.url}/v2/test/tmpfail/blobs/${blob.digest}`;
const blobGets = (): number => fwd.count({ method: 'GET', pathIncludes: '/blobs/' });

before(async () => {
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  await pushBlob(origin.url, 'test/tmpfail', blob);
  // Latency before each forwarded request: all clients have joined the one fill before its upstream answer arrives.
  fwd = await startCountingForwarder({ target: origin.url, latencyMs: 300 });
  mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }], diskErrorBackoffSeconds: BACKOFF_SECONDS });
});

after(async () => {
  await mirror?.destroy();
  await fwd?.stop();
  await origin?.stop();
});

async function get(): Promise<{ status: number; cache: string | undefined; digest: string | undefined }> {
  const res = await request(url());
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  const cache = res.headers['x-cache'];
  return { status: res.statusCode, cache: typeof cache === 'string' ? cache : undefined, digest: res.statusCode === 200 ? sha256(Buffer.concat(chunks)) : undefined };
}

describe('the temp file for a fill cannot be created', () => {
  test('concurrent clients of one uncached blob all get it, nothing is cached, and caching resumes once tmp is fixed', async () => {
    const tmpDir = join(mirror.cacheDir, 'tmp');
    // Root ignores permission bits, so break the directory itself: a file where tmp/ should be (ENOTDIR).
    await rm(tmpDir, { recursive: true, force: true });
    await writeFile(tmpDir, 'not a directory');

    const results = await Promise.all(Array.from({ length: CLIENTS }, () => get()));
    for (const r of results) {
      assert.equal(r.status, 200, 'every client is served');
      assert.equal(r.digest, blob.digest, 'with the right bytes');
    }
    assert.deepEqual(results.map((r) => r.cache).sort(), Array<string>(CLIENTS).fill('BYPASS'), 'each streamed straight through');
    assert.equal(blobGets(), CLIENTS, 'each client had its own verified stream from the upstream');
    assert.deepEqual(await readdir(join(mirror.cacheDir, 'blobs')), [], 'nothing was cached');

    // Fix the directory; once the backoff is over, the next miss fills and caches as usual.
    await rm(tmpDir, { force: true });
    await mkdir(tmpDir);
    await sleep(BACKOFF_SECONDS * 1000 + 200);
    const before = blobGets();
    const miss = await get();
    assert.equal(miss.status, 200);
    assert.equal(miss.digest, blob.digest);
    assert.equal(miss.cache, 'MISS');
    const hit = await get();
    assert.equal(hit.cache, 'HIT');
    assert.equal(hit.digest, blob.digest);
    assert.equal(blobGets() - before, 1, 'fetched once, then served from the cache');
  });
});
