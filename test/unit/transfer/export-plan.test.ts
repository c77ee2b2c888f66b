import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildImage, buildIndex, sha256 } from '../../fixtures/images.ts';
import type { BuiltImage, BuiltIndex } from '../../fixtures/images.ts';
import { ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ExportError, planExport, type ExportRoot } from '../../../src/transfer/export-plan.ts';
import type { Digest } from '../../../src/oci/digest.ts';

const MT_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

function reader(...images: Array<BuiltImage | BuiltIndex>): (d: Digest) => Promise<Buffer | undefined> {
  const all = new Map<string, Buffer>();
  for (const i of images) {
    all.set(i.manifestDigest, i.manifest);
    if ('children' in i) for (const c of i.children) all.set(c.manifestDigest, c.manifest);
  }
  return (d) => Promise.resolve(all.get(d));
}

const root = (name: string, i: BuiltImage | BuiltIndex): ExportRoot => ({ name, digest: i.manifestDigest as Digest, bytes: i.manifest });

function parse<T>(b: Buffer): T {
  return JSON.parse(b.toString('utf8')) as T;
}

type Index = { manifests: Array<{ mediaType: string; digest: string; size: number; annotations: Record<string, string>; platform?: { architecture: string } }> };
type Legacy = Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;

test('a Docker v2 image gets an OCI-typed index.json entry over its unchanged bytes, and a manifest.json row', async () => {
  const img = buildImage({ format: 'docker', seed: 'u1' });
  const plan = await planExport([root('docker.io/fx/docker:v1', img)], [], reader(img));
  const index = parse<Index>(plan.index);
  assert.equal(index.manifests.length, 1);
  const [entry] = index.manifests;
  assert.equal(entry?.mediaType, MT_OCI_MANIFEST, 'skopeo 1.9 only picks OCI-typed entries');
  assert.equal(entry?.digest, img.manifestDigest, 'digest unchanged');
  assert.equal(entry?.size, img.manifest.length);
  assert.equal(entry?.annotations[ANNOTATION_REF_NAME], 'docker.io/fx/docker:v1');
  assert.equal(entry?.annotations[ANNOTATION_CONTAINERD_NAME], 'docker.io/fx/docker:v1');
  const manifestBlob = plan.blobs.find((b) => b.digest === img.manifestDigest);
  assert.ok(manifestBlob?.bytes?.equals(img.manifest), 'the manifest is written byte for byte');
  assert.deepEqual(new Set(plan.blobs.map((b) => b.digest)), new Set([img.manifestDigest, ...img.blobs.map((b) => b.digest)]));
  for (const b of img.blobs) assert.equal(plan.blobs.find((p) => p.digest === b.digest)?.size, b.bytes.length);
  const legacy = parse<Legacy>(plan.manifestJson);
  assert.deepEqual(legacy, [{
    Config: `blobs/sha256/${img.blobs[0]?.digest.slice(7)}`,
    RepoTags: ['docker.io/fx/docker:v1'],
    Layers: img.blobs.slice(1).map((b) => `blobs/sha256/${b.digest.slice(7)}`),
  }]);
});

test('RepoTags are full names (podman would put short ones under localhost/); a digest-only ref has no RepoTag', async () => {
  const img = buildImage({ format: 'oci', seed: 'u2' });
  const plan = await planExport([root('docker.io/library/alpine:3', img), root(`docker.io/library/alpine@${img.manifestDigest}`, img)], [], reader(img));
  assert.deepEqual(parse<Legacy>(plan.manifestJson).map((r) => r.RepoTags), [['docker.io/library/alpine:3']]);
  assert.equal(parse<Index>(plan.index).manifests.length, 2, 'one index.json entry per name');
  assert.equal(new Set(plan.blobs.map((b) => b.digest)).size, plan.blobs.length, 'each blob once');
});

test('a multi-arch image keeps its index bytes; --platform narrows it to a new index with only those entries and blobs', async () => {
  const idx = buildIndex({ format: 'oci', seed: 'u3', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] });
  const [amd64, arm64] = idx.children;
  assert.ok(amd64 && arm64);
  const whole = await planExport([root('docker.io/fx/multi:v1', idx)], [], reader(idx));
  const wholeEntry = parse<Index>(whole.index).manifests[0];
  assert.equal(wholeEntry?.mediaType, MT_OCI_INDEX);
  assert.equal(wholeEntry?.digest, idx.manifestDigest, 'the upstream index, unchanged');
  assert.deepEqual(new Set(whole.blobs.map((b) => b.digest)), new Set([idx.manifestDigest, ...idx.children.flatMap((c) => [c.manifestDigest, ...c.blobs.map((b) => b.digest)])]));
  assert.equal(new Set(whole.blobs.map((b) => b.digest)).size, whole.blobs.length, 'a layer both platforms share is written once');

  const narrow = await planExport([root('docker.io/fx/multi:v1', idx)], [{ os: 'linux', architecture: 'arm64' }], reader(idx));
  const entry = parse<Index>(narrow.index).manifests[0];
  assert.ok(entry);
  assert.notEqual(entry.digest, idx.manifestDigest, 'a narrowed index is a new one');
  const written = narrow.blobs.find((b) => b.digest === entry.digest)?.bytes;
  assert.ok(written);
  assert.equal(sha256(written), entry.digest);
  assert.deepEqual(parse<Index>(written).manifests.map((m) => m.digest), [arm64.manifestDigest]);
  const digests = new Set(narrow.blobs.map((b) => b.digest));
  assert.deepEqual(digests, new Set([entry.digest, arm64.manifestDigest, ...arm64.blobs.map((b) => b.digest)]), 'only arm64 content');
  for (const b of amd64.blobs) if (!arm64.blobs.some((a) => a.digest === b.digest)) assert.ok(!digests.has(b.digest as Digest), `no amd64-only blob ${b.digest}`);
  assert.deepEqual(parse<Legacy>(narrow.manifestJson)[0]?.Config, `blobs/sha256/${arm64.blobs[0]?.digest.slice(7)}`);
});

test('a platform the index does not have, or a child manifest not cached, is an ExportError naming the image', async () => {
  const idx = buildIndex({ format: 'docker', seed: 'u4', platforms: [{ os: 'linux', arch: 'amd64' }] });
  await assert.rejects(planExport([root('docker.io/fx/m:1', idx)], [{ os: 'linux', architecture: 's390x' }], reader(idx)), (e: unknown) => e instanceof ExportError && /fx\/m:1.*linux\/s390x.*has linux\/amd64/.test(e.message));
  const onlyRoot = (d: Digest): Promise<Buffer | undefined> => Promise.resolve(d === (idx.manifestDigest as Digest) ? idx.manifest : undefined);
  await assert.rejects(planExport([root('docker.io/fx/m:1', idx)], [], onlyRoot), (e: unknown) => e instanceof ExportError && e.message.includes(idx.children[0]?.manifestDigest ?? '?') && e.message.includes('not cached'));
});

test('a Docker manifest list keeps its bytes under an OCI-typed entry', async () => {
  const idx = buildIndex({ format: 'docker', seed: 'u5', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] });
  const plan = await planExport([root('docker.io/fx/list:1', idx)], [], reader(idx));
  const entry = parse<Index>(plan.index).manifests[0];
  assert.equal(entry?.mediaType, MT_OCI_INDEX);
  assert.equal(entry?.digest, idx.manifestDigest);
});
