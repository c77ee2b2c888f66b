// The referrers API through Gantry (issue 16): built from the referrers tag against the real
// Distribution 2.8 (which has no API), relayed and cached from an upstream that has it, filtered
// by artifactType, and served stale with the upstream gone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { buildImage, pushBlob, pushImage, sha256, type Blob, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { startReferrersUpstream, type ReferrersUpstream } from '../helpers/referrers-upstream.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const INDEX = 'application/vnd.oci.image.index.v1+json';
const SBOM_TYPE = 'application/spdx+json';
const SIG_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const image = buildImage({ format: 'oci', seed: 'referred' });
const lonely = buildImage({ format: 'oci', seed: 'no-referrers' });

/** An OCI 1.1 artifact manifest about `subject`: the empty config, one layer of `content`. */
function artifact(subject: BuiltImage, artifactType: string, content: string): BuiltImage & { descriptor: Record<string, unknown> } {
  const emptyConfig: Blob = { digest: sha256(Buffer.from('{}')), bytes: Buffer.from('{}'), mediaType: 'application/vnd.oci.empty.v1+json' };
  const layer: Blob = { digest: sha256(Buffer.from(content)), bytes: Buffer.from(content), mediaType: artifactType };
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType,
    config: { mediaType: emptyConfig.mediaType, digest: emptyConfig.digest, size: 2 },
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.bytes.length }],
    subject: { mediaType: subject.mediaType, digest: subject.manifestDigest, size: subject.manifest.length },
  }));
  const digest = sha256(manifest);
  return {
    manifest, manifestDigest: digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', blobs: [emptyConfig, layer],
    descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: manifest.length, artifactType },
  };
}

const sbom = artifact(image, SBOM_TYPE, '{"spdxVersion":"SPDX-2.3"}');
const sig = artifact(image, SIG_TYPE, '{"signature":"abc"}');
const fallbackTag = `sha256-${image.manifestDigest.slice('sha256:'.length)}`;

let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let native: ReferrersUpstream;
let nativeFwd: CountingForwarder;
let node: Mirror | undefined;

before(async () => {
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  for (const repo of ['team/signed', 'team/native']) {
    await pushImage(origin.url, repo, 'v1', image);
    await pushImage(origin.url, repo, 'lonely', lonely);
    for (const a of [sbom, sig]) await pushImage(origin.url, repo, a.manifestDigest, a);
  }
  // What a client such as oras or cosign pushes when the registry lacks the API: the referrers tag.
  const tagIndex = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: [sbom.descriptor, sig.descriptor] }));
  const put = await fetch(`${origin.url}/v2/team/signed/manifests/${fallbackTag}`, { method: 'PUT', headers: { 'content-type': INDEX }, body: tagIndex });
  assert.equal(put.status, 201, await put.text());
  await pushBlob(origin.url, 'team/signed', { digest: sha256(Buffer.from('{}')), bytes: Buffer.from('{}') });
  fwd = await startCountingForwarder({ target: origin.url });
  native = await startReferrersUpstream(origin.url, new Map([[image.manifestDigest, [sbom.descriptor, sig.descriptor]]]));
  nativeFwd = await startCountingForwarder({ target: native.url });
  node = await startMirror({
    upstreams: [{ host: 'docker.io', url: fwd.url }, { host: 'native.example', url: nativeFwd.url, prefix: 'native' }],
    tagTtlSeconds: 300,
  });
});

after(async () => {
  await node?.destroy();
  await nativeFwd?.stop();
  await native?.stop();
  await fwd?.stop();
  await origin?.stop();
});

type Answer = { status: number; type: string; cache: string; filters: string | undefined; digests: string[]; body: string };

async function referrers(path: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await request(`${node?.url}/v2/${path}`, { method });
  const body = await res.body.text();
  const parsed = method === 'GET' ? (JSON.parse(body) as { mediaType: string; manifests: Array<{ digest: string }> }) : { manifests: [] };
  return {
    status: res.statusCode, type: String(res.headers['content-type']), cache: String(res.headers['x-cache']),
    filters: res.headers['oci-filters-applied'] as string | undefined, digests: parsed.manifests.map((m) => m.digest).sort(), body,
  };
}

const both = [sbom.manifestDigest, sig.manifestDigest].sort();

describe('referrers against Distribution 2.8 (no API): built from the referrers tag', () => {
  test('the index lists both referrers, then comes from the cache; HEAD too', async () => {
    const first = await referrers(`team/signed/referrers/${image.manifestDigest}`);
    assert.deepEqual([first.status, first.type, first.cache, first.digests], [200, INDEX, 'MISS', both]);
    const asked = fwd.count({ pathIncludes: '/referrers/' }) + fwd.count({ pathIncludes: fallbackTag });
    assert.ok(asked >= 2, 'asked the API (404), then the referrers tag');
    const again = await referrers(`team/signed/referrers/${image.manifestDigest}`);
    assert.deepEqual([again.cache, again.digests], ['HIT', both]);
    const head = await referrers(`team/signed/referrers/${image.manifestDigest}`, 'HEAD');
    assert.deepEqual([head.status, head.type, head.cache], [200, INDEX, 'HIT']);
    assert.equal(fwd.count({ pathIncludes: '/referrers/' }) + fwd.count({ pathIncludes: fallbackTag }), asked, 'nothing more upstream');
  });

  test('artifactType is applied by Gantry and said so; an unknown type gives an empty list', async () => {
    const sboms = await referrers(`team/signed/referrers/${image.manifestDigest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    assert.deepEqual([sboms.filters, sboms.digests], ['artifactType', [sbom.manifestDigest]]);
    const none = await referrers(`team/signed/referrers/${image.manifestDigest}?artifactType=application%2Fx-nothing`);
    assert.deepEqual([none.status, none.filters, none.digests], [200, 'artifactType', []]);
  });

  test('a digest with no referrers gets an empty index, not a 404', async () => {
    const empty = await referrers(`team/signed/referrers/${lonely.manifestDigest}`);
    assert.deepEqual([empty.status, empty.type, empty.digests], [200, INDEX, []]);
    assert.equal((JSON.parse(empty.body) as { schemaVersion: number }).schemaVersion, 2);
  });
});

describe('referrers from an upstream with the API', () => {
  test('relayed once, then cached; filtered here from the whole list', async () => {
    const first = await referrers(`native/team/native/referrers/${image.manifestDigest}`);
    assert.deepEqual([first.status, first.cache, first.digests], [200, 'MISS', both]);
    assert.equal(native.referrersAsked(), 1);
    const sigs = await referrers(`native/team/native/referrers/${image.manifestDigest}?artifactType=${encodeURIComponent(SIG_TYPE)}`);
    assert.deepEqual([sigs.cache, sigs.filters, sigs.digests], ['HIT', 'artifactType', [sig.manifestDigest]]);
    assert.equal(native.referrersAsked(), 1, 'the filtered answer came from the cached whole list');
    assert.equal(nativeFwd.count({ pathIncludes: fallbackTag }), 0, 'the referrers tag is not needed with the API');
  });
});

describe('with the upstream gone', () => {
  test('the referrers answer and the artifacts are still served from the cache; a due answer is marked stale', async () => {
    for (const a of [sbom, sig]) {
      const res = await request(`${node?.url}/v2/team/signed/manifests/${a.manifestDigest}`);
      assert.equal(Buffer.compare(Buffer.from(await res.body.arrayBuffer()), a.manifest), 0, 'artifact manifest byte for byte');
    }
    node = await node?.restart();
    await fwd.stop();
    // Restarted: answers kept in the index survive; then a tag TTL of 0 makes every answer due.
    const kept = await referrers(`team/signed/referrers/${image.manifestDigest}`);
    assert.deepEqual([kept.status, kept.digests], [200, both]);
    const raw = node?.config;
    assert.ok(raw);
    await node?.close();
    node = await startMirror({ upstreams: raw.upstreams, tagTtlSeconds: 0 }, node?.cacheDir);
    const stale = await referrers(`team/signed/referrers/${image.manifestDigest}`);
    assert.deepEqual([stale.status, stale.cache, stale.digests], [200, 'STALE', both]);
    const res = await request(`${node.url}/v2/team/signed/manifests/${sbom.manifestDigest}`);
    assert.equal(res.statusCode, 200);
    await res.body.dump();
  });
});
