// PassthroughListings' tag lists: relayed while the upstream answers, from the cache while it
// can't, over a real cache and an UpstreamClient on MockAgent.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClientCredential } from '../../../src/auth/credentials.ts';
import { digestOf } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';
import { parseRepositoryName } from '../../../src/oci/reference.ts';
import { AccessGuard } from '../../../src/proxy/access-guard.ts';
import { PassthroughListings, type ListingRequest } from '../../../src/proxy/listings.ts';
import { CacheCatalog } from '../../../src/store/catalog.ts';
import type { UpstreamConfig } from '../../../src/config/config.ts';
import { mockUpstream, silent, tempCache, type MockedUpstream, type TempCache } from '../support.ts';

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [] }));
const TAGS_PATH = '/v2/team/app/tags/list';

let up: MockedUpstream;
let tc: TempCache;
afterEach(async () => {
  up.agent.assertNoPendingInterceptors();
  await up.close();
  await tc.close();
});

async function setup(opts: { config?: Partial<UpstreamConfig>; failClosed?: boolean } = {}) {
  up = mockUpstream(opts.config);
  tc = await tempCache();
  const catalog = new CacheCatalog({ cache: tc.cache, naming: (_u, repo) => repo });
  const guard = new AccessGuard({ ttlSeconds: 60, failClosed: opts.failClosed ?? true, metrics: tc.metrics, log: silent });
  return new PassthroughListings({ maxBytes: 1 << 20, catalog, guard, log: silent });
}

/** Cache the manifest and tag it with each of `tags`, as a pull with `restricted` credentials would. */
async function cacheTags(tags: string[], restricted = false): Promise<void> {
  const digest = digestOf(manifest);
  await tc.cache.ingestBytes(digest, manifest, { kind: 'manifest', mediaType: OCI, upstream: up.client.host, repo: 'team/app', restricted });
  for (const tag of tags) await tc.cache.putTag(up.client.host, 'team/app', tag, { digest, mediaType: OCI, size: manifest.length, checkedAt: 1, restricted });
}

function req(auth: ClientCredential = { kind: 'none' }): ListingRequest {
  const name = parseRepositoryName('team/app');
  return { upstream: up.client, name, clientName: name, remoteName: name, renamed: false, auth, accept: undefined, headOnly: false };
}

const upstreamAnswers = (status: number, body = '{}'): void => {
  up.pool.intercept({ path: TAGS_PATH, method: 'GET' }).reply(status, body, { headers: { 'content-type': 'application/json' } });
};
const isCode = (code: string) => (err: unknown) => err instanceof RegistryError && err.code === code;

describe('PassthroughListings.tags', () => {
  test('relays the upstream list while it answers, cached tags or not', async () => {
    const listings = await setup();
    await cacheTags(['v1']);
    upstreamAnswers(200, '{"name":"team/app","tags":["v1","v2"]}');
    const answer = await listings.tags(req(), {});
    assert.equal(answer.source, 'upstream');
    assert.equal(answer.source === 'upstream' && answer.listing.bytes?.toString(), '{"name":"team/app","tags":["v1","v2"]}');
  });

  test('the cached tags, sorted, when the upstream answers 503, 500 or 429, or cannot be reached', async () => {
    const listings = await setup();
    await cacheTags(['v2', 'latest', 'v1']);
    for (const status of [503, 500, 429]) {
      upstreamAnswers(status);
      assert.deepEqual(await listings.tags(req(), {}), { source: 'cache', tags: ['latest', 'v1', 'v2'] }, `upstream ${status}`);
    }
    up.pool.intercept({ path: TAGS_PATH, method: 'GET' }).replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    assert.deepEqual(await listings.tags(req(), {}), { source: 'cache', tags: ['latest', 'v1', 'v2'] }, 'unreachable');
  });

  test("the upstream's error stands when nothing is cached for the repository, or it says the repository is unknown", async () => {
    const listings = await setup();
    upstreamAnswers(503);
    await assert.rejects(listings.tags(req(), {}), isCode('UNAVAILABLE'));
    await cacheTags(['v1']);
    upstreamAnswers(404, '{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}');
    await assert.rejects(listings.tags(req(), {}), isCode('NAME_UNKNOWN'));
  });

  test('serveCachedOn404 keeps the cached list for a repository the upstream no longer knows', async () => {
    const listings = await setup({ config: { serveCachedOn404: true } });
    await cacheTags(['v1']);
    upstreamAnswers(404, '{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}');
    assert.deepEqual(await listings.tags(req(), {}), { source: 'cache', tags: ['v1'] });
  });

  test('restricted tags need the access check a cached manifest gets: refused without a memo while the upstream is down (failClosed)', async () => {
    const listings = await setup();
    await cacheTags(['v1'], true);
    upstreamAnswers(503);
    // The check's HEAD fails too: the guard cannot confirm access, and fails closed.
    up.pool.intercept({ path: `/v2/team/app/manifests/${digestOf(manifest)}`, method: 'HEAD' }).reply(503, '');
    await assert.rejects(listings.tags(req(), {}), isCode('UNAVAILABLE'));
  });

  test('restricted tags: an anonymous client the upstream refuses gets UNAUTHORIZED; one it accepts gets the list', async () => {
    const listings = await setup();
    await cacheTags(['v1'], true);
    const basic: ClientCredential = { kind: 'basic', header: `Basic ${Buffer.from('alice:pw').toString('base64')}`, username: 'alice' };
    upstreamAnswers(429);
    up.pool.intercept({ path: `/v2/team/app/manifests/${digestOf(manifest)}`, method: 'HEAD' }).reply(401, '');
    await assert.rejects(listings.tags(req(), {}), isCode('UNAUTHORIZED'));
    upstreamAnswers(429);
    up.pool.intercept({ path: '/v2/', method: 'GET' }).reply(200, '{}');
    up.pool.intercept({ path: `/v2/team/app/manifests/${digestOf(manifest)}`, method: 'HEAD' }).reply(200, '', { headers: { 'content-type': OCI } });
    assert.deepEqual(await listings.tags(req(basic), {}), { source: 'cache', tags: ['v1'] });
  });
});
