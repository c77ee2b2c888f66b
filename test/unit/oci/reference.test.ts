import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference, parseRepositoryName, parseTag } from '../../../src/oci/reference.ts';
import { RegistryError, type OciErrorCode } from '../../../src/oci/errors.ts';

function assertRegistryError(fn: () => unknown, code: OciErrorCode, status: number): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.status, status);
    return true;
  });
}

describe('parseRepositoryName', () => {
  for (const name of ['library/alpine', 'alpine', 'a/b-c/d__e', 'a.b', 'a_b', 'a--b', 'a---b', 'ns/sub/deep/repo', 'x0/1y', 'a.b/c.d-e_f']) {
    test(`accepts ${JSON.stringify(name)}`, () => {
      assert.equal(parseRepositoryName(name), name);
    });
  }

  const invalid: Array<[string, string]> = [
    ['Alpine', 'uppercase'],
    ['library/Alpine', 'uppercase in a later component'],
    ['a//b', 'an empty component'],
    ['../x', 'a leading traversal'],
    ['a/..', 'a trailing traversal'],
    ['a/../b', 'a traversal in the middle'],
    ['.', 'a lone dot'],
    ['-a', 'a leading separator'],
    ['a-', 'a trailing separator'],
    ['a.', 'a trailing dot'],
    ['a___b', 'three underscores'],
    ['a..b', 'two dots'],
    ['%2e%2e', 'percent-encoded dots'],
    ['a%2fb', 'a percent-encoded slash'],
    ['/a', 'a leading slash'],
    ['a/', 'a trailing slash'],
    ['a b', 'a space'],
    ['a:b', 'a colon'],
    ['', 'the empty string'],
  ];
  for (const [name, why] of invalid) {
    test(`rejects a name with ${why} (${JSON.stringify(name)}) as NAME_INVALID`, () => {
      assertRegistryError(() => parseRepositoryName(name), 'NAME_INVALID', 400);
    });
  }

  test('accepts a 255-character name and rejects a 256-character one', () => {
    const ok = `${'a'.repeat(127)}/${'b'.repeat(127)}`;
    assert.equal(ok.length, 255);
    assert.equal(parseRepositoryName(ok), ok);
    assertRegistryError(() => parseRepositoryName(`${ok}c`), 'NAME_INVALID', 400);
    assertRegistryError(() => parseRepositoryName('a'.repeat(256)), 'NAME_INVALID', 400);
  });

  test('rejects a huge name quickly and clips it in the error detail', () => {
    const huge = 'a-'.repeat(100_000);
    assert.throws(
      () => parseRepositoryName(huge),
      (err: unknown) => {
        assert.ok(err instanceof RegistryError);
        assert.equal(err.code, 'NAME_INVALID');
        assert.ok(JSON.stringify(err.detail).length < 400);
        return true;
      },
    );
  });
});

describe('parseTag', () => {
  for (const tag of ['latest', 'v1.2.3', '1', '_private', 'A-Z_a.z-09', 'UPPER']) {
    test(`accepts ${JSON.stringify(tag)}`, () => {
      assert.equal(parseTag(tag), tag);
    });
  }

  test('accepts 128 characters and rejects 129', () => {
    assert.equal(parseTag('t'.repeat(128)), 't'.repeat(128));
    assertRegistryError(() => parseTag('t'.repeat(129)), 'TAG_INVALID', 400);
  });

  for (const tag of ['.hidden', '-dash', '', 'a/b', 'a b', '..', 'v1+meta', '%2e']) {
    test(`rejects ${JSON.stringify(tag)} as TAG_INVALID`, () => {
      assertRegistryError(() => parseTag(tag), 'TAG_INVALID', 400);
    });
  }
});

describe('parseReference', () => {
  test('a reference without a colon is a tag', () => {
    assert.deepEqual(parseReference('latest'), { kind: 'tag', tag: 'latest' });
  });

  test('a reference with a colon is a digest', () => {
    const d = `sha256:${'0'.repeat(64)}`;
    assert.deepEqual(parseReference(d), { kind: 'digest', digest: d });
  });

  test('an invalid digest reference is DIGEST_INVALID, not a tag', () => {
    assertRegistryError(() => parseReference('sha256:nothex'), 'DIGEST_INVALID', 400);
    assertRegistryError(() => parseReference('v1:2'), 'DIGEST_INVALID', 400);
  });

  test('an invalid tag reference is TAG_INVALID', () => {
    assertRegistryError(() => parseReference('.bad'), 'TAG_INVALID', 400);
    assertRegistryError(() => parseReference('x'.repeat(129)), 'TAG_INVALID', 400);
  });
});
