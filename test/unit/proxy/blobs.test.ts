// PullThroughBlobs over a real cache and an UpstreamClient on MockAgent: one
// upstream GET per miss proves the caching, as the integration tests do.
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { digestOf, type Digest } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';
import { AccessGuard } from '../../../src/proxy/access-guard.ts';
import { PullThroughBlobs, type BlobRequest } from '../../../src/proxy/blobs.ts';
import { FillError } from '../../../src/proxy/fill.ts';
import { parseRepositoryName } from '../../../src/oci/reference.ts';
import { parseRange } from '../../../src/http/range.ts';
import type { BlobStore } from '../../../src/store/blob-store-api.ts';
import type { UpstreamConfig } from '../../../src/config/config.ts';
import { mockUpstream, readBody, silent, tempCache, type MockedUpstream, type TempCache } from '../support.ts';


let up: MockedUpstream;
let tc: TempCache;
afterEach(async () => {
  await up.close();
  await tc.close();
});

async function setup(wrap?: (s: BlobStore) => BlobStore, upstream: Partial<UpstreamConfig> = {}): Promise<PullThroughBlobs> {
  up = mockUpstream(upstream);
  tc = await tempCache(wrap);
  return new PullThroughBlobs({
    cache: tc.cache,
    guard: new AccessGuard({ ttlSeconds: 60, failClosed: true, metrics: tc.metrics, log: silent }),
    metrics: tc.metrics,
    log: silent,
    fillTimeoutMs: 10_000,
    shutdown: new AbortController().signal,
    maxConcurrentFills: 8,
    fillQueueTimeoutMs: 1000,
    fillResumeAttempts: 1,
    diskErrorBackoffMs: 60_000,
  });
}

function req(digest: Digest): BlobRequest {
  const name = parseRepositoryName('team/app');
  return { upstream: up.client, name, clientName: name, remoteName: name, renamed: false, digest, auth: { kind: 'none' } };
}

function serveBlob(bytes: Buffer, times = 1): void {
  up.pool.intercept({ path: `/v2/team/app/blobs/${digestOf(bytes)}`, method: 'GET' }).reply(200, bytes, { headers: { 'content-length': String(bytes.length) } }).times(times);
}

async function settled(blobs: PullThroughBlobs, digest: Digest): Promise<void> {
  // The fill commits in the background; a HEAD answers 'hit' once it has.
  for (let i = 0; i < 200; i++) {
    if ((await blobs.head(req(digest))).result === 'hit') return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('never committed');
}

describe('PullThroughBlobs.open', () => {
  test('a miss fills once; then small blobs are hits from memory, large ones from the store, ranges applied', async () => {
    const blobs = await setup();
    const small = randomBytes(10_000);
    const large = randomBytes(1024 * 1024 + 10);
    serveBlob(small);
    serveBlob(large);
    for (const bytes of [small, large]) {
      const miss = await blobs.open(req(digestOf(bytes)), undefined, parseRange);
      assert.equal(miss.result, 'miss');
      assert.equal(miss.size, bytes.length);
      assert.equal(miss.stored, false);
      assert.ok((await readBody(miss.body)).equals(bytes));
      await settled(blobs, digestOf(bytes));
    }
    const hitSmall = await blobs.open(req(digestOf(small)), undefined, parseRange);
    assert.equal(hitSmall.result, 'hit');
    assert.ok(Buffer.isBuffer(hitSmall.body), 'small blobs come from memory');
    assert.ok(hitSmall.body.equals(small));
    const hitLarge = await blobs.open(req(digestOf(large)), 'bytes=100-199', parseRange);
    assert.equal(hitLarge.result, 'hit');
    assert.equal(hitLarge.stored, true);
    assert.ok(!Buffer.isBuffer(hitLarge.body));
    assert.deepEqual(hitLarge.range, { start: 100, end: 200 });
    assert.ok((await readBody(hitLarge.body)).equals(large.subarray(100, 200)));
    up.agent.assertNoPendingInterceptors(); // and no second GET was possible: each interceptor answers once
  });

  test('concurrent requests share one download: one miss, the rest coalesced, all the same bytes', async () => {
    const blobs = await setup();
    const bytes = randomBytes(300_000);
    serveBlob(bytes);
    const opened = await Promise.all(Array.from({ length: 5 }, () => blobs.open(req(digestOf(bytes)), undefined, parseRange)));
    assert.deepEqual(opened.map((o) => o.result).sort(), ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss']);
    for (const o of opened) assert.ok((await readBody(o.body)).equals(bytes));
  });

  test('an upstream 404 is BLOB_UNKNOWN for the requester and everyone who joined', async () => {
    const blobs = await setup();
    const d = digestOf(Buffer.from('gone'));
    up.pool.intercept({ path: `/v2/team/app/blobs/${d}`, method: 'GET' }).reply(404, '');
    const results = await Promise.allSettled([blobs.open(req(d), undefined, parseRange), blobs.open(req(d), undefined, parseRange)]);
    for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof RegistryError && r.reason.code === 'BLOB_UNKNOWN');
  });

  test('when the store cannot even start a write, every client is served by its own verified stream, and nothing is cached', async () => {
    // A real store whose writer creation fails as it does when out of file descriptors.
    const blobs = await setup((s) => ({
      init: () => s.init(), stat: (d) => s.stat(d), openRead: (d, r) => s.openRead(d, r), remove: (d) => s.remove(d), list: () => s.list(),
      createWriter: () => Promise.reject(Object.assign(new Error('too many open files'), { code: 'EMFILE', syscall: 'open' })),
    }));
    const bytes = randomBytes(50_000);
    serveBlob(bytes, 3);
    const opened = await Promise.all([1, 2, 3].map(() => blobs.open(req(digestOf(bytes)), undefined, parseRange)));
    for (const o of opened) {
      assert.equal(o.result, 'bypass');
      assert.ok((await readBody(o.body)).equals(bytes));
    }
    up.agent.assertNoPendingInterceptors(); // three GETs: one per client
    assert.equal(tc.cache.peek(digestOf(bytes)), undefined);
  });

  test('bytes that do not match the digest: a 502 before any answer, nothing cached', async () => {
    const blobs = await setup();
    const bytes = randomBytes(1000);
    const wrong = digestOf(Buffer.from('other'));
    up.pool.intercept({ path: `/v2/team/app/blobs/${wrong}`, method: 'GET' }).reply(200, bytes, { headers: { 'content-length': '1000' } });
    const opened = await blobs.open(req(wrong), undefined, parseRange);
    // The fill may fail before or after open returns: either a body that errors or (next time) a 502.
    await assert.rejects(readBody(opened.body));
    assert.equal(tc.cache.peek(wrong), undefined);
  });

  test('an unsatisfiable Range on a hit is a 416 that still says HIT', async () => {
    const blobs = await setup();
    const bytes = randomBytes(2000);
    serveBlob(bytes);
    await readBody((await blobs.open(req(digestOf(bytes)), undefined, parseRange)).body);
    await settled(blobs, digestOf(bytes));
    await assert.rejects(
      blobs.open(req(digestOf(bytes)), 'bytes=5000-', parseRange),
      (err: unknown) => err instanceof RegistryError && err.status === 416 && err.headers['X-Cache'] === 'HIT',
    );
  });
});

describe('PullThroughBlobs.head', () => {
  test('uncached: the upstream HEAD answers, and no download starts', async () => {
    const blobs = await setup();
    const d = digestOf(Buffer.from('head me'));
    up.pool.intercept({ path: `/v2/team/app/blobs/${d}`, method: 'HEAD' }).reply(200, '', { headers: { 'content-length': '7' } });
    assert.deepEqual(await blobs.head(req(d)), { size: 7, result: 'miss' });
    assert.equal(tc.cache.peek(d), undefined);
  });
});

describe('PullThroughBlobs.warm (prefetch)', () => {
  test('a miss is filled once without a client; the blob is then a hit for clients and for a second warm', async () => {
    const blobs = await setup();
    const bytes = randomBytes(200_000);
    serveBlob(bytes);
    const warming = await blobs.warm(req(digestOf(bytes)));
    assert.equal(warming.result, 'miss');
    assert.equal(warming.size, bytes.length);
    await warming.done;
    assert.equal(warming.written(), bytes.length);
    const again = await blobs.warm(req(digestOf(bytes)));
    assert.equal(again.result, 'hit');
    const served = await blobs.open(req(digestOf(bytes)), undefined, parseRange);
    assert.equal(served.result, 'hit');
    assert.ok((await readBody(served.body)).equals(bytes));
    up.agent.assertNoPendingInterceptors(); // the one interceptor answers once: one GET in all
  });

  test('a client joining a prefetch fill rides on it (one GET), and the transfer goes on at client priority', async () => {
    // A real loopback server, sending 16 KiB chunks: 400 KB at 200 KB/s waits on the limiter throughout.
    const bytes = randomBytes(400_000);
    let gets = 0;
    const server = createServer((rq, res) => {
      gets += 1;
      res.writeHead(200, { 'content-length': String(bytes.length) });
      let off = 0;
      const next = (): void => {
        if (off >= bytes.length || res.destroyed) return void res.end();
        res.write(bytes.subarray(off, (off += 16 * 1024)), () => setTimeout(next, 2));
      };
      next();
      rq.resume();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const origin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      const blobs = await setup(undefined, { url: `http://${origin}`, maxBytesPerSecond: 200_000 });
      up.agent.enableNetConnect(origin);
      const warming = await blobs.warm(req(digestOf(bytes)));
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(warming.written() < bytes.length, 'the client comes while the prefetch fill is still running');
      const client = await blobs.open(req(digestOf(bytes)), undefined, parseRange);
      assert.equal(client.result, 'coalesced');
      assert.ok((await readBody(client.body)).equals(bytes));
      await warming.done;
      const waited = await up.metrics.registry.getSingleMetric('gantry_upstream_throttled_seconds_total')?.get();
      const byPriority = new Map(waited?.values.map((v) => [v.labels['priority'], v.value]));
      assert.ok((byPriority.get('background') ?? 0) > 0, 'the prefetch waited at background priority before the client came');
      assert.ok((byPriority.get('client') ?? 0) > 0, 'and at client priority after');
      assert.equal(gets, 1);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test('an upstream 404 rejects the warm, and nothing is cached', async () => {
    const blobs = await setup();
    const d = digestOf(Buffer.from('not there'));
    up.pool.intercept({ path: `/v2/team/app/blobs/${d}`, method: 'GET' }).reply(404, '');
    await assert.rejects(blobs.warm(req(d)), (err: unknown) => err instanceof RegistryError && err.code === 'BLOB_UNKNOWN');
    assert.equal(tc.cache.peek(d), undefined);
  });

  test('bytes that do not match the digest: done rejects, nothing cached', async () => {
    const blobs = await setup();
    const d = digestOf(Buffer.from('expected'));
    const wrong = Buffer.from('something else entirely');
    up.pool.intercept({ path: `/v2/team/app/blobs/${d}`, method: 'GET' }).reply(200, wrong, { headers: { 'content-length': String(wrong.length) } });
    const warming = await blobs.warm(req(d));
    await assert.rejects(warming.done, (err: unknown) => err instanceof FillError && err.outcome === 'digest_mismatch');
    assert.equal(tc.cache.peek(d), undefined);
  });
});
