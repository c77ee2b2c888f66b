// The pure parts of the referrers API: the fallback tag, filtering, reading an upstream's index.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Digest } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';
import { fallbackTag, filterIndex, parseIndex } from '../../../src/proxy/referrers.ts';

const HEX = 'ab'.repeat(32);

describe('referrers', () => {
  test('the referrers tag schema: <alg>-<hex>', () => {
    assert.equal(fallbackTag(`sha256:${HEX}` as Digest), `sha256-${HEX}`);
    assert.equal(fallbackTag(`sha512:${'c'.repeat(128)}` as Digest).length, 128, 'cut to the longest tag');
  });

  test('artifactType filtering keeps matching descriptors, by field or by the referrers tag annotation', () => {
    const index = parseIndex(Buffer.from(JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { digest: 'a', artifactType: 'application/spdx+json' },
        { digest: 'b', artifactType: 'application/vnd.sig' },
        { digest: 'c', annotations: { 'org.opencontainers.artifact.type': 'application/spdx+json' } },
      ],
    })));
    assert.deepEqual(filterIndex(index, 'application/spdx+json').manifests.map((d) => d.digest), ['a', 'c']);
    assert.deepEqual(filterIndex(index, 'nothing').manifests, []);
  });

  test('an upstream answer that is not an index is a 502, never relayed', () => {
    for (const bad of ['not json', '{"manifests": {}}', '[]', 'null']) {
      assert.throws(() => parseIndex(Buffer.from(bad)), (err: unknown) => err instanceof RegistryError && err.status === 502, bad);
    }
    assert.equal(parseIndex(Buffer.from('{"manifests": [1, {"digest": "x"}]}')).manifests.length, 1, 'entries that are not objects are dropped');
  });
});
