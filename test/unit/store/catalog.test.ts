import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf, type Digest } from '../../../src/oci/digest.ts';
import { CacheCatalog, repositoriesOf, tagsOf, type ClientNaming } from '../../../src/store/catalog.ts';
import type { TagRecord } from '../../../src/store/index-store.ts';
import { withTempCache } from '../support.ts';

const d = (s: string): Digest => digestOf(Buffer.from(s));
const entry = (upstream: string, repo: string, restricted?: boolean) => ({ upstream, repo, ...(restricted === undefined ? {} : { restricted }) });
const tag = (upstream: string, repo: string, name: string, digest: Digest, restricted = false): TagRecord => ({
  upstream, repo, tag: name, entry: { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10, checkedAt: 1, restricted },
});
/** docker.io is the default upstream; others go behind their host. */
const naming: ClientNaming = (upstream, repo) => (upstream === 'docker.io' ? repo : upstream === 'gone.example' ? undefined : `${upstream}/${repo}`);
const nothingCached = (): boolean => false;

describe('repositoriesOf', () => {
  test('one sorted entry per repository, named for clients', async () => {
    const repos = await repositoriesOf({
      entries: [entry('docker.io', 'library/alpine'), entry('ghcr.io', 'org/app'), entry('docker.io', 'library/alpine'), entry('docker.io', 'Zeta/x')],
      tags: [],
      isCached: nothingCached,
      naming,
    });
    assert.deepEqual(repos.map((r) => r.name), ['Zeta/x', 'ghcr.io/org/app', 'library/alpine']);
    assert.deepEqual(repos[1], { name: 'ghcr.io/org/app', upstream: 'ghcr.io', repo: 'org/app', restricted: false });
  });

  test('a repository known only by tags is listed while a tagged manifest is cached, not after it was evicted', async () => {
    const kept = d('kept');
    const repos = await repositoriesOf({
      entries: [],
      tags: [tag('docker.io', 'team/shared', 'v1', kept), tag('docker.io', 'team/evicted', 'v1', d('gone'))],
      isCached: (digest) => digest === kept,
      naming,
    });
    assert.deepEqual(repos.map((r) => r.name), ['team/shared']);
  });

  test('restricted when any object or any tag record of it is, even one whose manifest is gone', async () => {
    const m = d('m');
    const repos = await repositoriesOf({
      entries: [entry('docker.io', 'a/public', false), entry('docker.io', 'b/mixed', false), entry('docker.io', 'b/mixed', true), entry('docker.io', 'c/tagged')],
      tags: [tag('docker.io', 'c/tagged', 'v1', m), tag('docker.io', 'c/tagged', 'old', d('evicted'), true)],
      isCached: (digest) => digest === m,
      naming,
    });
    assert.deepEqual(repos.map((r) => [r.name, r.restricted]), [['a/public', false], ['b/mixed', true], ['c/tagged', true]]);
  });

  test('a repository no client path leads to is left out', async () => {
    const repos = await repositoriesOf({ entries: [entry('gone.example', 'x/y'), entry('docker.io', 'x/y')], tags: [], isCached: nothingCached, naming });
    assert.deepEqual(repos.map((r) => r.name), ['x/y']);
  });

  test('two repositories that come out under one name are merged, restricted winning', async () => {
    const repos = await repositoriesOf({
      entries: [entry('docker.io', 'library/alpine', false), entry('mirror.example', 'library/alpine', true)],
      tags: [],
      isCached: nothingCached,
      naming: (_u, repo) => repo,
    });
    assert.deepEqual(repos.map((r) => [r.name, r.restricted]), [['library/alpine', true]]);
  });
});

describe('tagsOf', () => {
  test('the tags whose manifest is cached, sorted, with their record', async () => {
    const a = d('a');
    const tags = await tagsOf([tag('docker.io', 'r', 'v2', a, true), tag('docker.io', 'r', 'evicted', d('x')), tag('docker.io', 'r', 'latest', a)], (digest) => digest === a);
    assert.deepEqual(tags.map((t) => [t.tag, t.restricted]), [['latest', false], ['v2', true]]);
    assert.equal(tags[0]?.digest, a);
  });
});

describe('CacheCatalog over a real cache', () => {
  const meta = (upstream: string, repo: string, restricted = false) => ({ kind: 'manifest' as const, mediaType: 'application/vnd.oci.image.manifest.v1+json', upstream, repo, restricted });

  test('repositories from objects and tags; tags of one repository only (not of a repository whose name starts the same)', async () => {
    await withTempCache(async ({ cache }) => {
      const catalog = new CacheCatalog({ cache, naming });
      const one = Buffer.from('{"manifest":1}');
      const two = Buffer.from('{"manifest":2}');
      await cache.ingestBytes(digestOf(one), one, meta('docker.io', 'team/app'));
      await cache.ingestBytes(digestOf(two), two, meta('ghcr.io', 'org/private', true));
      const t = { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: one.length, checkedAt: 1 };
      await cache.putTag('docker.io', 'team/app', 'v1', { ...t, digest: digestOf(one) });
      await cache.putTag('docker.io', 'team/app', 'latest', { ...t, digest: digestOf(one) });
      await cache.putTag('docker.io', 'team/app/sub', 'v9', { ...t, digest: digestOf(one) });
      await cache.putTag('docker.io', 'team/ap', 'v8', { ...t, digest: digestOf(one) });
      await cache.putTag('ghcr.io', 'team/app', 'v7', { ...t, digest: digestOf(one) });
      await cache.putTag('docker.io', 'team/app', 'old', { ...t, digest: d('evicted') });

      const all = await catalog.cachedRepositories({ includeRestricted: true });
      assert.deepEqual(all.map((r) => r.name), ['ghcr.io/org/private', 'ghcr.io/team/app', 'team/ap', 'team/app', 'team/app/sub']);
      const open = await catalog.cachedRepositories({ includeRestricted: false });
      assert.deepEqual(open.map((r) => r.name), ['ghcr.io/team/app', 'team/ap', 'team/app', 'team/app/sub']);

      assert.deepEqual((await catalog.cachedTags('docker.io', 'team/app')).map((x) => x.tag), ['latest', 'v1']);
      assert.deepEqual((await catalog.cachedTags('docker.io', 'team/ap')).map((x) => x.tag), ['v8']);
      assert.deepEqual(await catalog.cachedTags('docker.io', 'nothing/here'), []);
    });
  });
});
