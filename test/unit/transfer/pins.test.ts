import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Digest } from '../../../src/oci/digest.ts';
import type { PinRecord } from '../../../src/store/index-store.ts';
import { imageDigests, listPins, PinError, releasePin } from '../../../src/transfer/pins.ts';
import { buildIndex } from '../../fixtures/images.ts';
import { withTempCache } from '../support.ts';

const D1 = `sha256:${'1'.repeat(64)}` as Digest;
const D2 = `sha256:${'2'.repeat(64)}` as Digest;
const hub = { upstreams: [{ host: 'docker.io' }, { host: 'ghcr.io' }], defaultUpstream: 'docker.io' };

function pin(upstream: string, repo: string, reference: string, digests: Digest[] = [D1]): PinRecord {
  return { upstream, repo, reference, digests, pinnedAt: Date.UTC(2026, 0, 2, 3, 4, 5) };
}

describe('listing pins', () => {
  test('each pin as a ref gantry unpin takes back, its counts and an ISO time, ordered by ref', async () => {
    await withTempCache(async (c) => {
      await c.cache.pin(pin('ghcr.io', 'org/app', '1', [D1, D2, D1]));
      await c.cache.pin(pin('docker.io', 'library/nginx', D2));
      const listed = listPins(c.cache);
      assert.deepEqual(listed, [
        { ref: `docker.io/library/nginx@${D2}`, upstream: 'docker.io', repository: 'library/nginx', reference: D2, digests: 1, cachedDigests: 0, bytes: 0, pinnedAt: '2026-01-02T03:04:05.000Z' },
        { ref: 'ghcr.io/org/app:1', upstream: 'ghcr.io', repository: 'org/app', reference: '1', digests: 2, cachedDigests: 0, bytes: 0, pinnedAt: '2026-01-02T03:04:05.000Z' },
      ]);
      for (const p of listed) assert.equal((await releasePin(p.ref, c.cache, hub)).ref, p.ref, 'the listed ref releases its pin');
      assert.deepEqual(c.cache.pins(), []);
    });
  });
});

describe('releasing a pin', () => {
  test('a Docker Hub name as docker pull takes it releases the default upstream\'s pin; a tag is tried before the digest', async () => {
    await withTempCache(async (c) => {
      await c.cache.pin(pin('docker.io', 'library/nginx', '1.27'));
      await c.cache.pin(pin('docker.io', 'library/nginx', D1));
      assert.equal((await releasePin(`nginx:1.27@${D1}`, c.cache, hub)).reference, '1.27');
      assert.equal((await releasePin(`nginx@${D1}`, c.cache, hub)).reference, D1);
      assert.deepEqual(c.cache.pins(), []);
    });
  });

  test('under another default upstream, an official image pinned without library/ is found', async () => {
    await withTempCache(async (c) => {
      await c.cache.pin(pin('mirror.internal', 'alpine', '3'));
      const released = await releasePin('alpine:3', c.cache, { upstreams: [{ host: 'mirror.internal' }], defaultUpstream: 'mirror.internal' });
      assert.equal(released.ref, 'mirror.internal/alpine:3');
    });
  });

  test('a ref that does not parse is invalid; one that names no pin, or an unconfigured registry, is unknown; both name it', async () => {
    await withTempCache(async (c) => {
      await c.cache.pin(pin('docker.io', 'library/nginx', '1'));
      const failure = (raw: string): Promise<PinError> => releasePin(raw, c.cache, hub).then(() => assert.fail(raw), (e: unknown) => e as PinError);
      const bad = await failure('Bad Ref');
      assert.equal(bad.kind, 'invalid');
      assert.match(bad.message, /invalid image reference "Bad Ref"/);
      assert.deepEqual([(await failure('nginx:2')).kind, (await failure('nginx:2')).message], ['unknown', 'nginx:2 is not pinned']);
      const elsewhere = await failure('quay.io/library/nginx:1');
      assert.equal(elsewhere.kind, 'unknown');
      assert.match(elsewhere.message, /^quay\.io\/library\/nginx:1 is not pinned \(no upstream is configured for quay\.io\)$/);
      assert.equal(c.cache.pins().length, 1, 'nothing else was released');
    });
  });
});

test('imageDigests: an index, its children, their configs and layers, each once; a digest without bytes is a blob', () => {
  const index = buildIndex({ format: 'oci', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }], seed: 'pins-unit' });
  const manifests = new Map<Digest, Buffer>([[index.manifestDigest as Digest, index.manifest], ...index.children.map((ch): [Digest, Buffer] => [ch.manifestDigest as Digest, ch.manifest])]);
  const expected = new Set([index.manifestDigest, ...index.children.flatMap((ch) => [ch.manifestDigest, ...ch.blobs.map((b) => b.digest)])]);
  const got = imageDigests(index.manifestDigest as Digest, manifests);
  assert.equal(got.length, expected.size);
  assert.deepEqual(new Set(got), expected);
  assert.deepEqual(imageDigests(D1, new Map()), [D1]);
});
