import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseRange } from '../../../src/http/range.ts';
import { RegistryError } from '../../../src/oci/errors.ts';

/** Asserts a 416 RANGE_INVALID naming the full size in Content-Range. */
function assertUnsatisfiable(header: string, size: number): void {
  assert.throws(
    () => parseRange(header, size),
    (err: unknown) => {
      assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
      assert.equal(err.code, 'RANGE_INVALID');
      assert.equal(err.status, 416);
      assert.equal(err.headers['Content-Range'], `bytes */${size}`);
      return true;
    },
  );
}

describe('parseRange: satisfiable single ranges (end exclusive)', () => {
  test('bytes=0-0 is the first byte', () => {
    assert.deepEqual(parseRange('bytes=0-0', 100), { start: 0, end: 1 });
  });

  test('bytes=10-19 is ten bytes', () => {
    assert.deepEqual(parseRange('bytes=10-19', 100), { start: 10, end: 20 });
  });

  test('bytes=5- runs to the end', () => {
    assert.deepEqual(parseRange('bytes=5-', 100), { start: 5, end: 100 });
  });

  test('bytes=99- is the last byte', () => {
    assert.deepEqual(parseRange('bytes=99-', 100), { start: 99, end: 100 });
  });

  test('an end past the size is clamped to the size', () => {
    assert.deepEqual(parseRange('bytes=90-1000', 100), { start: 90, end: 100 });
    assert.deepEqual(parseRange('bytes=0-99999999999999999999', 100), { start: 0, end: 100 });
  });

  test('bytes=-10 is the last ten bytes', () => {
    assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 100 });
  });

  test('a suffix larger than the size is the whole body', () => {
    assert.deepEqual(parseRange('bytes=-500', 100), { start: 0, end: 100 });
  });

  test('the unit is case-insensitive and whitespace around tokens is tolerated', () => {
    assert.deepEqual(parseRange('Bytes=0-9', 100), { start: 0, end: 10 });
    assert.deepEqual(parseRange(' bytes = 0 - 9 ', 100), { start: 0, end: 10 });
  });
});

describe('parseRange: unsatisfiable ranges are 416 with Content-Range bytes */size', () => {
  test('a start equal to the size', () => {
    assertUnsatisfiable('bytes=100-', 100);
    assertUnsatisfiable('bytes=100-200', 100);
  });

  test('a start beyond the size', () => {
    assertUnsatisfiable('bytes=500-600', 100);
    assertUnsatisfiable('bytes=99999999999999999999-', 100);
  });

  test('a zero-length suffix', () => {
    assertUnsatisfiable('bytes=-0', 100);
  });

  test('any range of an empty body', () => {
    assertUnsatisfiable('bytes=0-0', 0);
    assertUnsatisfiable('bytes=-5', 0);
  });
});

describe('parseRange: ignored headers give undefined (serve the full body)', () => {
  test('no header', () => {
    assert.equal(parseRange(undefined, 100), undefined);
    assert.equal(parseRange('', 100), undefined);
  });

  test('multiple ranges', () => {
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange('bytes=0-1, 500-600', 100), undefined);
  });

  test('garbage', () => {
    for (const h of ['bytes', 'bytes=', 'bytes=-', 'bytes=a-b', 'bytes=1-2-3', 'items=0-1', '0-1', 'bytes=0x10-', 'bytes=-1.5', 'bytes=+1-2']) {
      assert.equal(parseRange(h, 100), undefined, h);
    }
  });

  test('a last byte before the first byte is syntactically invalid and ignored', () => {
    assert.equal(parseRange('bytes=10-5', 100), undefined);
  });
});
