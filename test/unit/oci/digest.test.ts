import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createDigester, digestAlgorithm, digestHex, digestOf, isDigestLike, parseDigest } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';

const SHA256_HEX = 'a'.repeat(64);
const SHA512_HEX = '0123456789abcdef'.repeat(8);

/** Asserts `fn` throws the DIGEST_INVALID registry error (400). */
function assertDigestInvalid(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    assert.equal(err.code, 'DIGEST_INVALID');
    assert.equal(err.status, 400);
    return true;
  });
}

describe('parseDigest', () => {
  test('accepts a sha256 digest with 64 lowercase hex characters', () => {
    const raw = `sha256:${SHA256_HEX}`;
    assert.equal(parseDigest(raw), raw);
  });

  test('accepts a sha512 digest with 128 lowercase hex characters', () => {
    const raw = `sha512:${SHA512_HEX}`;
    assert.equal(parseDigest(raw), raw);
  });

  test('accepts a real sha256 of some bytes', () => {
    const hex = createHash('sha256').update('hello').digest('hex');
    assert.equal(parseDigest(`sha256:${hex}`), `sha256:${hex}`);
  });

  test('rejects uppercase hex', () => {
    assertDigestInvalid(() => parseDigest(`sha256:${'A'.repeat(64)}`));
    assertDigestInvalid(() => parseDigest(`sha256:${'a'.repeat(63)}F`));
  });

  test('rejects an uppercase algorithm name', () => {
    assertDigestInvalid(() => parseDigest(`SHA256:${SHA256_HEX}`));
  });

  test('rejects a hex part one character too short or too long', () => {
    assertDigestInvalid(() => parseDigest(`sha256:${'a'.repeat(63)}`));
    assertDigestInvalid(() => parseDigest(`sha256:${'a'.repeat(65)}`));
    assertDigestInvalid(() => parseDigest(`sha512:${'a'.repeat(127)}`));
    assertDigestInvalid(() => parseDigest(`sha512:${'a'.repeat(129)}`));
  });

  test('rejects a sha256-length hex under sha512 and vice versa', () => {
    assertDigestInvalid(() => parseDigest(`sha512:${SHA256_HEX}`));
    assertDigestInvalid(() => parseDigest(`sha256:${SHA512_HEX}`));
  });

  test('rejects hex-length strings containing non-hex characters', () => {
    assertDigestInvalid(() => parseDigest(`sha256:${'g'.repeat(64)}`));
    assertDigestInvalid(() => parseDigest(`sha256:${'a'.repeat(62)}-_`));
  });

  test('rejects an unknown algorithm even with plausible hex', () => {
    assertDigestInvalid(() => parseDigest(`md5:${'a'.repeat(32)}`));
    assertDigestInvalid(() => parseDigest(`sha1:${'a'.repeat(40)}`));
    assertDigestInvalid(() => parseDigest(`sha384:${'a'.repeat(96)}`));
    assertDigestInvalid(() => parseDigest(`sha256+b64:${SHA256_HEX}`));
  });

  test('rejects path traversal strings', () => {
    for (const raw of ['sha256:../../x', '../../etc/passwd', `sha256:../${'a'.repeat(61)}`, `sha256:${'a'.repeat(32)}/${'a'.repeat(31)}`, 'sha256:%2e%2e%2fx']) {
      assertDigestInvalid(() => parseDigest(raw));
    }
  });

  test('rejects the empty string and strings without an algorithm or hex', () => {
    for (const raw of ['', ':', 'sha256:', `:${SHA256_HEX}`, 'sha256', SHA256_HEX]) {
      assertDigestInvalid(() => parseDigest(raw));
    }
  });

  test('rejects surrounding whitespace, extra colons and NUL bytes', () => {
    for (const raw of [` sha256:${SHA256_HEX}`, `sha256:${SHA256_HEX}\n`, `sha256:sha256:${SHA256_HEX}`, `sha256:${SHA256_HEX.slice(1)}\u0000`]) {
      assertDigestInvalid(() => parseDigest(raw));
    }
  });

  test('rejects huge strings and clips them in the error detail', () => {
    const huge = `sha256:${'a'.repeat(1_000_000)}`;
    assert.throws(
      () => parseDigest(huge),
      (err: unknown) => {
        assert.ok(err instanceof RegistryError);
        assert.equal(err.code, 'DIGEST_INVALID');
        assert.equal(err.status, 400);
        assert.equal(typeof err.detail, 'string');
        assert.ok((err.detail as string).length < 200, 'detail must not echo the whole input');
        return true;
      },
    );
  });
});

describe('digest helpers', () => {
  test('digestAlgorithm and digestHex split a parsed digest', () => {
    const d = parseDigest(`sha512:${SHA512_HEX}`);
    assert.equal(digestAlgorithm(d), 'sha512');
    assert.equal(digestHex(d), SHA512_HEX);
  });

  test('isDigestLike is true exactly when the string contains a colon', () => {
    assert.equal(isDigestLike(`sha256:${SHA256_HEX}`), true);
    assert.equal(isDigestLike('latest'), false);
  });
});

describe('digestOf and createDigester', () => {
  const bytes = new TextEncoder().encode('The quick brown fox jumps over the lazy dog');

  test('digestOf gives the sha256 of the bytes in alg:hex form by default', () => {
    assert.equal(digestOf(bytes), `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  });

  test('digestOf supports sha512', () => {
    assert.equal(digestOf(bytes, 'sha512'), `sha512:${createHash('sha512').update(bytes).digest('hex')}`);
  });

  test('a digester fed the bytes in pieces agrees with digestOf', () => {
    for (const alg of ['sha256', 'sha512'] as const) {
      const d = createDigester(alg);
      for (let i = 0; i < bytes.length; i += 7) d.update(bytes.subarray(i, i + 7));
      assert.equal(d.digest(), digestOf(bytes, alg));
    }
  });

  test('the digest of empty input is the well-known empty sha256', () => {
    assert.equal(createDigester().digest(), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(digestOf(new Uint8Array(0)), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  test('computed digests round-trip through parseDigest', () => {
    assert.equal(parseDigest(digestOf(bytes)), digestOf(bytes));
    assert.equal(parseDigest(digestOf(bytes, 'sha512')), digestOf(bytes, 'sha512'));
  });
});
