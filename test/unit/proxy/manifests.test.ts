// PullThroughManifests over a real cache and an UpstreamClient on MockAgent,
// with a hand-moved clock for the tag TTL (no sleeps).
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';
import { parseReference, parseRepositoryName } from '../../../src/oci/reference.ts';
import { AccessGuard } from '../../../src/proxy/access-guard.ts';
import { PullThroughManifests, type ManifestRequest } from '../../../src/proxy/manifests.ts';
import type { UpstreamConfig } from '../../../src/config/config.ts';
import { manualClock, mockUpstream, silent, tempCache, type MockedUpstream, type TempCache } from '../support.ts';

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const TTL_MS = 60_000;
const v1 = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [], n: 1 }));
const v2 = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [], n: 2 }));

let up: MockedUpstream;
let tc: TempCache;
afterEach(async () => {
  up.agent.assertNoPendingInterceptors();
  await up.close();
  await tc.close();
});

async function setup(config: Partial<UpstreamConfig> = {}) {
  up = mockUpstream(config);
  tc = await tempCache();
  const clock = manualClock();
  const manifests = new PullThroughManifests({
    cache: tc.cache,
    guard: new AccessGuard({ ttlSeconds: 60, failClosed: true, metrics: tc.metrics, log: silent }),
    metrics: tc.metrics,
    log: silent,
    maxBytes: 1024 * 1024,
    tagTtlMs: () => TTL_MS,
    now: clock.now,
  });
  return { manifests, clock };
}

function req(reference: string, opts: { headOnly?: boolean } = {}): ManifestRequest {
  const name = parseRepositoryName('team/app');
  return {
    upstream: up.client, name, clientName: name, remoteName: name, renamed: false,
    reference: parseReference(reference), accept: [], auth: { kind: 'none' }, headOnly: opts.headOnly ?? false,
  };
}

function serveGet(reference: string, body: Buffer): void {
  up.pool.intercept({ path: `/v2/team/app/manifests/${reference}`, method: 'GET' })
    .reply(200, body, { headers: { 'content-type': OCI, 'docker-content-digest': digestOf(body), 'content-length': String(body.length) } });
}

function serveHead(reference: string, body: Buffer): void {
  up.pool.intercept({ path: `/v2/team/app/manifests/${reference}`, method: 'HEAD' })
    .reply(200, '', { headers: { 'content-type': OCI, 'docker-content-digest': digestOf(body), 'content-length': String(body.length) } });
}

describe('PullThroughManifests: tags and their TTL', () => {
  test('within the TTL a tag is a hit with no upstream request; after it, a HEAD revalidates; a moved digest is fetched again', async () => {
    const { manifests, clock } = await setup();
    serveGet('latest', v1);
    const miss = await manifests.get(req('latest'));
    assert.equal(miss.result, 'miss');
    assert.equal(miss.digest, digestOf(v1));
    assert.ok(miss.bytes?.equals(v1));

    clock.advance(TTL_MS - 1);
    assert.equal((await manifests.get(req('latest'))).result, 'hit');

    clock.advance(2);
    serveHead('latest', v1);
    const revalidated = await manifests.get(req('latest'));
    assert.equal(revalidated.result, 'revalidated');
    assert.ok(revalidated.bytes?.equals(v1));
    // Revalidating restarted the TTL.
    clock.advance(TTL_MS - 1);
    assert.equal((await manifests.get(req('latest'))).result, 'hit');

    clock.advance(2);
    serveHead('latest', v2);
    serveGet('latest', v2);
    const moved = await manifests.get(req('latest'));
    assert.equal(moved.result, 'miss');
    assert.equal(moved.digest, digestOf(v2));
  });

  test('after the TTL, an upstream that is down (5xx), rate limiting (429) or unreachable serves the cached tag stale', async () => {
    const { manifests, clock } = await setup();
    serveGet('latest', v1);
    await manifests.get(req('latest'));
    for (const fail of [
      () => up.pool.intercept({ path: '/v2/team/app/manifests/latest', method: 'HEAD' }).reply(503, ''),
      () => up.pool.intercept({ path: '/v2/team/app/manifests/latest', method: 'HEAD' }).reply(429, ''),
      () => up.pool.intercept({ path: '/v2/team/app/manifests/latest', method: 'HEAD' }).replyWithError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })),
    ]) {
      clock.advance(TTL_MS + 1);
      fail();
      const stale = await manifests.get(req('latest'));
      assert.equal(stale.result, 'stale');
      assert.ok(stale.bytes?.equals(v1));
    }
  });

  for (const serveCachedOn404 of [false, true]) {
    test(`after the TTL, an upstream 404 is ${serveCachedOn404 ? 'served stale when the upstream keeps cached content on 404' : 'MANIFEST_UNKNOWN'}`, async () => {
      const { manifests, clock } = await setup({ serveCachedOn404 });
      serveGet('latest', v1);
      await manifests.get(req('latest'));
      clock.advance(TTL_MS + 1);
      up.pool.intercept({ path: '/v2/team/app/manifests/latest', method: 'HEAD' }).reply(404, '');
      if (serveCachedOn404) assert.equal((await manifests.get(req('latest'))).result, 'stale');
      else await assert.rejects(manifests.get(req('latest')), (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN');
    });
  }

  test('HEAD of an unknown tag asks the upstream HEAD and remembers the tag for the TTL', async () => {
    const { manifests, clock } = await setup();
    serveHead('v1', v1);
    const head = await manifests.get(req('v1', { headOnly: true }));
    assert.deepEqual({ ...head }, { digest: digestOf(v1), mediaType: OCI, size: v1.length, bytes: undefined, result: 'miss' });
    clock.advance(TTL_MS - 1);
    assert.equal((await manifests.get(req('v1', { headOnly: true }))).result, 'hit');
  });

  test('an upstream HEAD without a valid Docker-Content-Digest is a 502', async () => {
    const { manifests } = await setup();
    up.pool.intercept({ path: '/v2/team/app/manifests/v1', method: 'HEAD' }).reply(200, '', { headers: { 'content-type': OCI, 'content-length': '10' } });
    await assert.rejects(manifests.get(req('v1', { headOnly: true })), (err: unknown) => err instanceof RegistryError && err.status === 502);
  });
});

describe('PullThroughManifests: by digest', () => {
  test('fetched once, then local; bytes that do not hash to the digest are MANIFEST_INVALID and not cached', async () => {
    const { manifests } = await setup();
    serveGet(digestOf(v1), v1);
    assert.equal((await manifests.get(req(digestOf(v1)))).result, 'miss');
    assert.equal((await manifests.get(req(digestOf(v1)))).result, 'hit');
    up.pool.intercept({ path: `/v2/team/app/manifests/${digestOf(v2)}`, method: 'GET' }).reply(200, v1, { headers: { 'content-type': OCI } });
    await assert.rejects(manifests.get(req(digestOf(v2))), (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_INVALID');
    assert.equal(tc.cache.peek(digestOf(v2)), undefined);
  });

  test('concurrent identical requests share one upstream exchange', async () => {
    const { manifests } = await setup();
    serveGet(digestOf(v2), v2);
    const all = await Promise.all([1, 2, 3].map(() => manifests.get(req(digestOf(v2)))));
    for (const m of all) assert.ok(m.bytes?.equals(v2));
  });
});
