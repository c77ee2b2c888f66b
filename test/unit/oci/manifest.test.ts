import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatImageRef, parseImageRef } from '../../../src/oci/image-ref.ts';
import { formatPlatform, parseManifest, parsePlatform, platformMatches, referencedDigests } from '../../../src/oci/manifest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));

describe('parseManifest', () => {
  test('an OCI image: config and layers, with subject and artifactType', () => {
    const m = parseManifest(bytes({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/x-sig',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('a'), size: 10 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('b'), size: 20, annotations: { k: 'v', n: 1 } }],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('c'), size: 30 },
    }));
    assert.equal(m.kind, 'image');
    assert.deepEqual(referencedDigests(m), [d('a'), d('b')]);
    assert.equal(m.subject?.digest, d('c'));
    assert.equal(m.artifactType, 'application/x-sig');
    assert.deepEqual(m.kind === 'image' && m.layers[0]?.annotations, { k: 'v' }, 'non-string annotations are dropped');
  });

  test('a Docker manifest list: children with platforms; the type comes from the bytes, not a descriptor', () => {
    const m = parseManifest(bytes({
      schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
      manifests: [
        { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('1'), size: 5, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('2'), size: 5, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }));
    assert.equal(m.kind, 'index');
    assert.equal(m.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    assert.deepEqual(referencedDigests(m), [d('1'), d('2')]);
    assert.deepEqual(m.kind === 'index' && m.manifests[0]?.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  test('an OCI index without a mediaType field is recognised by its manifests list', () => {
    assert.equal(parseManifest(bytes({ schemaVersion: 2, manifests: [] })).kind, 'index');
  });

  test('malformed manifests are MANIFEST_INVALID, saying what is wrong', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['not json{', /not JSON/],
      [[1, 2], /not a JSON object/],
      [{ schemaVersion: 1, fsLayers: [] }, /schemaVersion 1 is not 2/],
      [{ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }, /config.mediaType is missing/],
      [{ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'x', digest: 'sha256:zz', size: 1 }, layers: [] }, /config.digest .* is not a valid digest/],
      [{ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'x', digest: d('a'), size: -1 }, layers: [] }, /config.size/],
      [{ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'x', digest: d('a'), size: 1 } }, /without a layers list/],
      [{ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: 'x', digest: d('a'), size: 1, platform: { os: 'linux' } }] }, /platform needs os and architecture/],
    ];
    for (const [raw, why] of cases) {
      const input = typeof raw === 'string' ? Buffer.from(raw) : bytes(raw);
      assert.throws(() => parseManifest(input), (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_INVALID' && why.test(err.message), String(why));
    }
  });
});

describe('platforms', () => {
  test('parse, format and match', () => {
    assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
    assert.equal(formatPlatform(parsePlatform('linux/arm/v7')), 'linux/arm/v7');
    for (const bad of ['linux', 'linux/', '/amd64', 'a/b/c/d', 'linux/amd 64']) assert.throws(() => parsePlatform(bad), /invalid platform/);
    const arm64v8 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
    assert.ok(platformMatches(arm64v8, parsePlatform('linux/arm64')), 'no variant wanted: any variant');
    assert.ok(platformMatches(arm64v8, parsePlatform('linux/arm64/v8')));
    assert.ok(!platformMatches(arm64v8, parsePlatform('linux/arm64/v9')));
    assert.ok(!platformMatches(undefined, parsePlatform('linux/amd64')));
  });
});

describe('parseImageRef', () => {
  test("Docker's normalisation", () => {
    const cases: Array<[string, string]> = [
      ['nginx', 'docker.io/library/nginx:latest'],
      ['nginx:1.27', 'docker.io/library/nginx:1.27'],
      ['bitnami/redis', 'docker.io/bitnami/redis:latest'],
      ['docker.io/library/nginx:1.27', 'docker.io/library/nginx:1.27'],
      ['ghcr.io/Org/app:v1', ''],
      ['ghcr.io/org/app:v1', 'ghcr.io/org/app:v1'],
      ['localhost/app', 'localhost/app:latest'],
      ['registry.internal:5000/team/app', 'registry.internal:5000/team/app:latest'],
      [`app@${d('a')}`, `docker.io/library/app@${d('a')}`],
      [`reg:5000/app:v2@${d('b')}`, `reg:5000/app:v2@${d('b')}`],
    ];
    for (const [raw, want] of cases) {
      if (want === '') assert.throws(() => parseImageRef(raw), /invalid image reference.*repository name/);
      else assert.equal(formatImageRef(parseImageRef(raw)), want, raw);
    }
  });

  test('bad references name themselves', () => {
    for (const bad of ['', 'a b', 'app@sha256:xyz', 'app:bad tag', 'app:-x', 'UPPER']) assert.throws(() => parseImageRef(bad), /invalid image reference/, bad);
  });
});
