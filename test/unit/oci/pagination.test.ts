import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError } from '../../../src/oci/errors.ts';
import { MAX_PAGE_ENTRIES, nextLink, paginate, parsePageQuery, type PageQuery } from '../../../src/oci/pagination.ts';

const q = (n?: number, last?: string): PageQuery => ({ n, last });

describe('parsePageQuery', () => {
  test('reads n and last; empty values count as absent', () => {
    assert.deepEqual(parsePageQuery({ n: '2', last: 'b' }), { n: 2, last: 'b' });
    assert.deepEqual(parsePageQuery({}), { n: undefined, last: undefined });
    assert.deepEqual(parsePageQuery({ n: '', last: '' }), { n: undefined, last: undefined });
    assert.deepEqual(parsePageQuery({ n: '0' }), { n: 0, last: undefined });
  });

  test('anything but a decimal number is PAGINATION_NUMBER_INVALID (400)', () => {
    for (const n of ['-1', 'abc', '1.5', '+3', ' 2', '2 ', '0x10', '1e3', '99999999999999999']) {
      assert.throws(
        () => parsePageQuery({ n }),
        (err: unknown) => err instanceof RegistryError && err.code === 'PAGINATION_NUMBER_INVALID' && err.status === 400,
        `n=${JSON.stringify(n)}`,
      );
    }
  });

  test('an n above the maximum is lowered to it', () => {
    assert.equal(parsePageQuery({ n: String(MAX_PAGE_ENTRIES + 1) }).n, MAX_PAGE_ENTRIES);
    assert.equal(parsePageQuery({ n: '9999999999' }).n, MAX_PAGE_ENTRIES);
  });
});

describe('paginate', () => {
  const all = ['a', 'b', 'c', 'd'];

  test("the spec's example: n=2 gives a and b with a next page after b, then c and d and no next page", () => {
    assert.deepEqual(paginate(all, q(2)), { items: ['a', 'b'], next: { n: 2, last: 'b' } });
    assert.deepEqual(paginate(all, q(2, 'b')), { items: ['c', 'd'], next: undefined });
  });

  test('without n: the default when given, else everything', () => {
    assert.deepEqual(paginate(all, q(), 3), { items: ['a', 'b', 'c'], next: { n: 3, last: 'c' } });
    assert.deepEqual(paginate(all, q()), { items: all, next: undefined });
  });

  test('last need not be in the list: the page starts at the first entry after it', () => {
    assert.deepEqual(paginate(all, q(10, 'bb')).items, ['c', 'd']);
    assert.deepEqual(paginate(all, q(10, '0')).items, all);
    assert.deepEqual(paginate(all, q(10, 'z')), { items: [], next: undefined });
  });

  test('n=0 is an empty page with no next page', () => {
    assert.deepEqual(paginate(all, q(0)), { items: [], next: undefined });
  });

  test('following next pages visits every entry exactly once, at every page size', () => {
    const names = Array.from({ length: 23 }, (_, i) => `repo-${String(i).padStart(2, '0')}`);
    for (let n = 1; n <= 25; n++) {
      const seen: string[] = [];
      let page = paginate(names, q(n));
      seen.push(...page.items);
      for (let guard = 0; page.next && guard < 100; guard++) {
        page = paginate(names, q(page.next.n, page.next.last));
        seen.push(...page.items);
      }
      assert.deepEqual(seen, names, `n=${n}`);
    }
  });

  test('order is byte order, not locale order', () => {
    const sorted = ['B', 'a', 'a-b', 'a/b', 'a_b'];
    assert.deepEqual(paginate(sorted, q(10, 'B')).items, ['a', 'a-b', 'a/b', 'a_b']);
  });
});

describe('nextLink', () => {
  test('relative to this server, last before n, as distribution sends it', () => {
    assert.equal(nextLink('/v2/_catalog', { n: 2, last: 'b' }), '</v2/_catalog?last=b&n=2>; rel="next"');
  });

  test('names are query-encoded; kept parameters come along and absent ones are left out', () => {
    assert.equal(
      nextLink('/v2/internal/app/tags/list', { n: 5, last: 'v1.0' }, { ns: 'registry.internal:5000', other: undefined }),
      '</v2/internal/app/tags/list?ns=registry.internal%3A5000&last=v1.0&n=5>; rel="next"',
    );
    assert.equal(nextLink('/v2/_catalog', { n: 1, last: 'ghcr.io/org/app' }), '</v2/_catalog?last=ghcr.io%2Forg%2Fapp&n=1>; rel="next"');
  });
});
