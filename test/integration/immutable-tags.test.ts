// immutableTags (issue 16): tags whose digest never changes are never revalidated upstream,
// counted at a forwarder in front of the real Distribution registry.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { buildImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let node: Mirror | undefined;
const image = buildImage({ format: 'oci', seed: 'immutable' });

before(async () => {
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  for (const tag of ['v1.2.3', 'latest']) await pushImage(origin.url, 'team/signed', tag, image);
  fwd = await startCountingForwarder({ target: origin.url });
});

after(async () => {
  await node?.destroy();
  await fwd?.stop();
  await origin?.stop();
});

async function manifest(method: 'GET' | 'HEAD', tag: string): Promise<{ status: number; digest: string; cache: string }> {
  const res = await request(`${node?.url}/v2/team/signed/manifests/${tag}`, { method, headers: { accept: MANIFEST_ACCEPT } });
  await res.body.dump();
  return { status: res.statusCode, digest: String(res.headers['docker-content-digest']), cache: String(res.headers['x-cache']) };
}

const upstreamAsks = (tag: string): number => fwd.count({ pathIncludes: `/manifests/${tag}` });

test('a tag matching immutableTags sends nothing upstream after the first pull, even with a tag TTL of 0, across a restart and with the upstream gone', async () => {
  node = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }], tagTtlSeconds: 0, immutableTags: ['v*.*.*'] });
  for (const method of ['GET', 'HEAD', 'GET'] as const) assert.deepEqual((await manifest(method, 'v1.2.3')).digest, image.manifestDigest);
  assert.equal(upstreamAsks('v1.2.3'), 1, 'one GET, then nothing');
  for (const method of ['GET', 'HEAD', 'GET'] as const) assert.equal((await manifest(method, 'latest')).status, 200);
  assert.ok(upstreamAsks('latest') >= 3, `a mutable tag with a TTL of 0 is revalidated each time (${upstreamAsks('latest')} upstream requests)`);

  node = await node.restart();
  assert.deepEqual(await manifest('GET', 'v1.2.3'), { status: 200, digest: image.manifestDigest, cache: 'HIT' });
  await fwd.stop();
  assert.deepEqual(await manifest('HEAD', 'v1.2.3'), { status: 200, digest: image.manifestDigest, cache: 'HIT' }, 'a hit, not a stale answer: nothing was asked');
  assert.equal(upstreamAsks('v1.2.3'), 1);
});
