import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseApiPath } from '../../../src/http/parse-path.ts';
import { RegistryError, type OciErrorCode } from '../../../src/oci/errors.ts';

const D = `sha256:${'ab'.repeat(32)}`;

function assertRegistryError(fn: () => unknown, code: OciErrorCode, status: number): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.status, status);
    return true;
  });
}

describe('parseApiPath: base and catalog', () => {
  test('/v2/ and /v2 are the base endpoint', () => {
    assert.deepEqual(parseApiPath('/v2/'), { route: 'base' });
    assert.deepEqual(parseApiPath('/v2'), { route: 'base' });
  });

  test('/v2/_catalog is the catalog', () => {
    assert.deepEqual(parseApiPath('/v2/_catalog'), { route: 'catalog' });
  });
});

describe('parseApiPath: manifests', () => {
  test('a manifest by tag', () => {
    assert.deepEqual(parseApiPath('/v2/library/alpine/manifests/3.20'), {
      route: 'manifest',
      name: 'library/alpine',
      reference: { kind: 'tag', tag: '3.20' },
    });
  });

  test('a manifest by digest', () => {
    assert.deepEqual(parseApiPath(`/v2/library/alpine/manifests/${D}`), {
      route: 'manifest',
      name: 'library/alpine',
      reference: { kind: 'digest', digest: D },
    });
  });

  test('a single-component name', () => {
    assert.deepEqual(parseApiPath('/v2/alpine/manifests/latest'), {
      route: 'manifest',
      name: 'alpine',
      reference: { kind: 'tag', tag: 'latest' },
    });
  });

  test('a manifest reference that is neither a tag nor a digest is an unknown manifest (404), as registries answer', () => {
    for (const ref of ['.bad', '-bad', 'x'.repeat(129), 'sha256:xyz', `md5:${'a'.repeat(32)}`]) {
      assertRegistryError(() => parseApiPath(`/v2/library/alpine/manifests/${ref}`), 'MANIFEST_UNKNOWN', 404);
    }
  });

  test('an invalid blob digest is still DIGEST_INVALID (400)', () => {
    assertRegistryError(() => parseApiPath('/v2/library/alpine/blobs/sha256:xyz'), 'DIGEST_INVALID', 400);
  });

  test('an empty reference is refused with a 404', () => {
    assertRegistryError(() => parseApiPath('/v2/library/alpine/manifests/'), 'MANIFEST_UNKNOWN', 404);
  });
});

describe('parseApiPath: blobs and uploads', () => {
  test('a blob by digest', () => {
    assert.deepEqual(parseApiPath(`/v2/library/alpine/blobs/${D}`), { route: 'blob', name: 'library/alpine', digest: D });
  });

  test('an invalid blob digest is DIGEST_INVALID', () => {
    assertRegistryError(() => parseApiPath('/v2/library/alpine/blobs/sha256:../../x'), 'DIGEST_INVALID', 400);
    assertRegistryError(() => parseApiPath('/v2/library/alpine/blobs/'), 'DIGEST_INVALID', 400);
  });

  test('a blob path with something after the digest is refused', () => {
    assert.throws(() => parseApiPath(`/v2/library/alpine/blobs/${D}/extra`), RegistryError);
  });

  for (const p of ['/v2/library/alpine/blobs/uploads', '/v2/library/alpine/blobs/uploads/', '/v2/library/alpine/blobs/uploads/some-uuid']) {
    test(`${p} is the upload route`, () => {
      assert.deepEqual(parseApiPath(p), { route: 'upload' });
    });
  }
});

describe('parseApiPath: tags and referrers', () => {
  test('tags/list', () => {
    assert.deepEqual(parseApiPath('/v2/library/alpine/tags/list'), { route: 'tags', name: 'library/alpine' });
  });

  test('anything other than tags/list under tags is an unknown endpoint (404)', () => {
    assertRegistryError(() => parseApiPath('/v2/library/alpine/tags/other'), 'UNSUPPORTED', 404);
    assertRegistryError(() => parseApiPath('/v2/library/alpine/tags/'), 'UNSUPPORTED', 404);
  });

  test('referrers by digest', () => {
    assert.deepEqual(parseApiPath(`/v2/library/alpine/referrers/${D}`), { route: 'referrers', name: 'library/alpine', digest: D });
  });

  test('referrers with an invalid digest is DIGEST_INVALID', () => {
    assertRegistryError(() => parseApiPath('/v2/library/alpine/referrers/latest'), 'DIGEST_INVALID', 400);
  });
});

describe('parseApiPath: names containing endpoint words', () => {
  test('a name containing "blobs" is split at the last /blobs/', () => {
    assert.deepEqual(parseApiPath(`/v2/blobs/blobs/${D}`), { route: 'blob', name: 'blobs', digest: D });
    assert.deepEqual(parseApiPath(`/v2/team/blobs/app/blobs/${D}`), { route: 'blob', name: 'team/blobs/app', digest: D });
  });

  test('a name containing "manifests" is split at the last /manifests/', () => {
    assert.deepEqual(parseApiPath('/v2/manifests/manifests/latest'), {
      route: 'manifest',
      name: 'manifests',
      reference: { kind: 'tag', tag: 'latest' },
    });
    assert.deepEqual(parseApiPath('/v2/a/manifests/b/manifests/v1'), {
      route: 'manifest',
      name: 'a/manifests/b',
      reference: { kind: 'tag', tag: 'v1' },
    });
  });

  test('a name containing "manifests" can have blobs and tags', () => {
    assert.deepEqual(parseApiPath(`/v2/x/manifests/blobs/${D}`), { route: 'blob', name: 'x/manifests', digest: D });
    assert.deepEqual(parseApiPath('/v2/x/blobs/tags/list'), { route: 'tags', name: 'x/blobs' });
  });
});

describe('parseApiPath: invalid names', () => {
  for (const name of ['Library/alpine', 'a//b', '-a', 'a-', 'a/b/']) {
    test(`name ${JSON.stringify(name)} is NAME_INVALID`, () => {
      assertRegistryError(() => parseApiPath(`/v2/${name}/manifests/latest`), 'NAME_INVALID', 400);
    });
  }

  test('a plain traversal in the name is refused', () => {
    assertRegistryError(() => parseApiPath(`/v2/../blobs/${D}`), 'NAME_INVALID', 400);
    assertRegistryError(() => parseApiPath(`/v2/library/../../etc/blobs/${D}`), 'NAME_INVALID', 400);
  });

  test('a percent-encoded traversal in the name is refused', () => {
    assertRegistryError(() => parseApiPath(`/v2/%2e%2e/blobs/${D}`), 'NAME_INVALID', 400);
    assertRegistryError(() => parseApiPath(`/v2/%2E%2E/%2e%2e/blobs/${D}`), 'NAME_INVALID', 400);
    assertRegistryError(() => parseApiPath(`/v2/library%2f..%2f..%2fetc/blobs/${D}`), 'NAME_INVALID', 400);
    assertRegistryError(() => parseApiPath('/v2/%2e%2e/manifests/latest'), 'NAME_INVALID', 400);
  });

  test('a percent-encoded digest is refused', () => {
    assertRegistryError(() => parseApiPath(`/v2/library/alpine/blobs/sha256%3a${'ab'.repeat(32)}`), 'DIGEST_INVALID', 400);
  });

  test('a name longer than 255 characters is NAME_INVALID', () => {
    assertRegistryError(() => parseApiPath(`/v2/${'a'.repeat(256)}/manifests/latest`), 'NAME_INVALID', 400);
  });
});

describe('parseApiPath: unknown endpoints', () => {
  for (const p of ['/', '/v1/library/alpine/manifests/latest', '/v2/library/alpine', '/v2/library/alpine/other/x', '/v2//blobs/x', '/v3/', '/v2/_catalogue', '/v2x']) {
    test(`${JSON.stringify(p)} is a 404`, () => {
      assertRegistryError(() => parseApiPath(p), 'UNSUPPORTED', 404);
    });
  }
});
