import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { entriesOf, legacyDockerSave, ociLayout, tarOf, type Entry, type Files } from '../../fixtures/archives.ts';
import { buildImage, buildIndex, makeTar, sha256, type BuiltImage, type BuiltIndex } from '../../fixtures/images.ts';
import { openArchive } from '../../../src/transfer/archive-source.ts';
import { importArchive, type ImportSummary } from '../../../src/transfer/import.ts';
import { formatSummary } from '../../../src/transfer/import-report.ts';
import type { Digest } from '../../../src/oci/digest.ts';
import { readBody, withTempCache, type TempCache } from '../support.ts';

const UPSTREAM = 'registry-1.docker.io';
let work: string;
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'gantry-import-unit-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function archive(name: string, files: Files | Entry[]): Promise<string> {
  const file = path.join(work, name);
  await writeFile(file, await tarOf(Array.isArray(files) ? files : entriesOf(files)));
  return file;
}

async function run(c: TempCache, file: string, repository?: string): Promise<ImportSummary> {
  return importArchive(await openArchive(file), c.cache, { upstream: UPSTREAM, ...(repository !== undefined ? { repository } : {}) });
}

async function cachedBytes(c: TempCache, digest: string): Promise<Buffer | undefined> {
  const got = await c.cache.readWhole(digest as Digest);
  return got ? readBody(got.bytes) : undefined;
}

/** The cache holds nothing: no index entry, no blob file, no temp file. */
async function assertEmpty(c: TempCache): Promise<void> {
  assert.equal(c.cache.entries, 0);
  const names: string[] = [];
  for await (const n of c.store.list()) names.push(n);
  assert.deepEqual(names, []);
}

describe('gantry import: format readers', () => {
  it('an OCI archive with a full reference: manifest, config and layers byte for byte, tag under its repository', async () => {
    const img = buildImage({ format: 'oci', seed: 'oci-full' });
    const file = await archive('oci-full.tar', ociLayout([{ image: img, refName: 'docker.io/library/nginx:1.27' }]));
    await withTempCache(async (c) => {
      const s = await run(c, file);
      assert.equal(s.format, 'oci');
      assert.deepEqual(s.images.map((i) => [i.repository, i.tag, i.digest]), [['library/nginx', '1.27', img.manifestDigest]]);
      assert.equal(s.blobsNew, 3);
      assert.deepEqual(await cachedBytes(c, img.manifestDigest), img.manifest);
      for (const b of img.blobs) assert.deepEqual(await cachedBytes(c, b.digest), b.bytes);
      const tag = await c.cache.getTag(UPSTREAM, 'library/nginx', '1.27');
      assert.equal(tag?.digest, img.manifestDigest);
      assert.equal(tag?.mediaType, 'application/vnd.oci.image.manifest.v1+json');
      const again = await run(c, file);
      assert.equal(again.blobsNew, 0);
      assert.equal(again.blobsPresent, 3);
    });
  });

  it('without --upstream, each image lands under the upstream its name gives (a mixed `gantry export`), else the default; --upstream puts them all under one', async () => {
    const hub = buildImage({ format: 'oci', seed: 'mixed-hub' });
    const other = buildImage({ format: 'oci', seed: 'mixed-other' });
    const unknown = buildImage({ format: 'oci', seed: 'mixed-unknown' });
    const file = await archive('mixed.tar', ociLayout([
      { image: hub, refName: 'docker.io/test/hub:1' },
      { image: other, refName: 'registry.example.com/test/other:2' },
      { image: unknown, refName: '127.0.0.1:5000/test/unknown:3' },
    ]));
    const hosts = ['docker.io', 'registry.example.com'];
    await withTempCache(async (c) => {
      const s = await importArchive(await openArchive(file), c.cache, { upstream: 'docker.io', byRegistry: hosts });
      assert.deepEqual(s.images.map((i) => [i.upstream, i.repository, i.tag]), [[undefined, 'test/hub', '1'], ['registry.example.com', 'test/other', '2'], [undefined, 'test/unknown', '3']]);
      assert.equal((await c.cache.getTag('docker.io', 'test/hub', '1'))?.digest, hub.manifestDigest);
      assert.equal((await c.cache.getTag('registry.example.com', 'test/other', '2'))?.digest, other.manifestDigest);
      assert.equal(await c.cache.getTag('docker.io', 'test/other', '2'), undefined, 'not under the default upstream as well');
      assert.equal((await c.cache.getTag('docker.io', 'test/unknown', '3'))?.digest, unknown.manifestDigest, 'a registry with no upstream: the default');
      assert.match(formatSummary([s]), /^imported registry\.example\.com\/test\/other:2 sha256:/m);
      assert.match(formatSummary([s]), /^imported test\/hub:1 sha256:/m);
    });
    await withTempCache(async (c) => {
      await importArchive(await openArchive(file), c.cache, { upstream: 'registry.example.com' });
      for (const [repo, tag, img] of [['test/hub', '1', hub], ['test/other', '2', other], ['test/unknown', '3', unknown]] as const) {
        assert.equal((await c.cache.getTag('registry.example.com', repo, tag))?.digest, img.manifestDigest, `--upstream: ${repo}:${tag}`);
      }
    });
  });

  it('a multi-arch index with a bare tag and --repository: the index and every child; a Docker v2 child keeps its type from its bytes', async () => {
    const index = buildIndex({ format: 'docker', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }], seed: 'multi' });
    const file = await archive('oci-index.tar', ociLayout([{ image: index, refName: '2.0' }], true));
    await withTempCache(async (c) => {
      await assert.rejects(run(c, file), /oci-index\.tar: entry "index\.json sha256:[0-9a-f]+": names only the tag "2\.0": pass --repository NAME/);
      await assertEmpty(c);
      const s = await run(c, file, 'team/app');
      assert.deepEqual(s.images.map((i) => [i.repository, i.tag, i.digest, i.mediaType]), [['team/app', '2.0', index.manifestDigest, index.mediaType]]);
      assert.equal(s.manifests, 3);
      for (const child of index.children) {
        const entry = await c.cache.stat(child.manifestDigest as Digest);
        assert.equal(entry?.mediaType, 'application/vnd.docker.distribution.manifest.v2+json', 'the descriptor said OCI; the bytes say Docker v2');
      }
    });
  });

  it('an OCI image layout directory, read by paths', async () => {
    const img = buildImage({ format: 'oci', seed: 'dir' });
    const dir = path.join(work, 'layout-dir');
    for (const [name, data] of Object.entries(ociLayout([{ image: img, refName: 'example.com/team/dir:1' }]))) {
      await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await writeFile(path.join(dir, name), data);
    }
    await withTempCache(async (c) => {
      const s = await run(c, dir);
      assert.deepEqual(s.images.map((i) => [i.repository, i.tag]), [['team/dir', '1']]);
      assert.equal((await c.cache.getTag(UPSTREAM, 'team/dir', '1'))?.digest, img.manifestDigest);
    });
  });

  it('a Docker 25+ save (OCI layout and manifest.json): the registry manifest from blobs/, named by io.containerd.image.name', async () => {
    const img = buildImage({ format: 'docker', seed: 'docker25' });
    const files = { ...ociLayout([{ image: img, refName: '3', fullName: 'docker.io/library/alpine:3' }], true), 'manifest.json': '[]' };
    const file = await archive('docker25.tar', files);
    await withTempCache(async (c) => {
      const s = await run(c, file);
      assert.deepEqual(s.images.map((i) => [i.repository, i.tag, i.digest, i.authored]), [['library/alpine', '3', img.manifestDigest, false]]);
      assert.deepEqual(await cachedBytes(c, img.manifestDigest), img.manifest);
    });
  });

  it('a legacy docker save: Gantry builds a Docker v2 manifest over the archive\'s layer bytes and tags every RepoTag', async () => {
    const img = buildImage({ format: 'docker', seed: 'legacy' });
    const file = await archive('legacy.tar', legacyDockerSave(img, ['busybox:1.36', 'registry.example.com/x/y:2']));
    await withTempCache(async (c) => {
      const s = await run(c, file);
      assert.equal(s.format, 'docker-save');
      assert.equal(s.images.length, 2);
      const [first] = s.images;
      assert.ok(first?.authored);
      const manifest = await cachedBytes(c, first.digest);
      assert.ok(manifest);
      assert.equal(sha256(manifest), first.digest);
      const parsed = JSON.parse(manifest.toString()) as { mediaType: string; config: { digest: string }; layers: Array<{ mediaType: string; digest: string; size: number }> };
      assert.equal(parsed.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
      assert.equal(parsed.config.digest, img.blobs[0]?.digest);
      assert.deepEqual(parsed.layers.map((l) => [l.digest, l.size, l.mediaType]), img.blobs.slice(1).map((b) => [b.digest, b.bytes.length, 'application/vnd.docker.image.rootfs.diff.tar.gzip']));
      assert.equal((await c.cache.getTag(UPSTREAM, 'library/busybox', '1.36'))?.digest, first.digest);
      assert.equal((await c.cache.getTag(UPSTREAM, 'x/y', '2'))?.digest, first.digest);
    });
  });

  it('a legacy docker save whose layer is a symlink to another image\'s (dockerd 20.10, one layer on two parent chains)', async () => {
    const shared = makeTar({ 'etc/shared': 'shared\n' });
    const a = buildImage({ format: 'docker', seed: 'link-a', layers: [gzipSync(makeTar({ 'etc/a': 'a\n' })), gzipSync(shared)] });
    const b = buildImage({ format: 'docker', seed: 'link-b', layers: [gzipSync(makeTar({ 'etc/b': 'b\n' })), gzipSync(shared)] });
    const ids = { a0: 'a0'.repeat(32), a1: 'a1'.repeat(32), b0: 'b0'.repeat(32), b1: 'b1'.repeat(32) };
    const [ca, la0, la1] = a.blobs;
    const [cb, lb0] = b.blobs;
    assert.ok(ca && la0 && la1 && cb && lb0);
    // As dockerd 20.10 writes it: the second image's copy of the shared layer links to the first's.
    const entries: Entry[] = [
      { name: 'a.json', data: ca.bytes },
      { name: `${ids.a0}/layer.tar`, data: la0.bytes },
      { name: `${ids.a1}/layer.tar`, data: la1.bytes },
      { name: 'b.json', data: cb.bytes },
      { name: `${ids.b0}/layer.tar`, data: lb0.bytes },
      { name: `${ids.b1}/layer.tar`, header: { type: 'symlink', linkname: `../${ids.a1}/layer.tar` } },
      {
        name: 'manifest.json',
        data: Buffer.from(
          JSON.stringify([
            { Config: 'a.json', RepoTags: ['x/a:1'], Layers: [`${ids.a0}/layer.tar`, `${ids.a1}/layer.tar`] },
            { Config: 'b.json', RepoTags: ['x/b:1'], Layers: [`${ids.b0}/layer.tar`, `${ids.b1}/layer.tar`] },
          ]),
        ),
      },
    ];
    const file = await archive('legacy-symlink.tar', entries);
    await withTempCache(async (c) => {
      const s = await run(c, file);
      assert.deepEqual(s.images.map((i) => `${i.repository}:${i.tag ?? ''}`), ['x/a:1', 'x/b:1']);
      const mb = JSON.parse((await cachedBytes(c, s.images[1]?.digest ?? ''))?.toString() ?? '{}') as { layers: Array<{ digest: string }> };
      assert.deepEqual(mb.layers.map((l) => l.digest), [lb0.digest, la1.digest], 'x/b\'s second layer is the shared one');
      assert.deepEqual(await cachedBytes(c, la1.digest), la1.bytes);
      assert.equal(s.blobsNew, 5, 'two configs, three distinct layers');
    });
  });

  it('a legacy docker save with an uncompressed layer types it .tar', async () => {
    const base = buildImage({ format: 'docker', seed: 'plain' });
    const plain = makeTar({ 'etc/plain': 'not gzipped\n' });
    const img = { ...base, blobs: [...base.blobs.slice(0, 1), { digest: sha256(plain), bytes: plain, mediaType: 'x' }] };
    const file = await archive('legacy-plain.tar', legacyDockerSave(img, ['plain:1']));
    await withTempCache(async (c) => {
      const s = await run(c, file);
      const m = JSON.parse((await cachedBytes(c, s.images[0]?.digest ?? ''))?.toString() ?? '{}') as { layers: Array<{ mediaType: string }> };
      assert.deepEqual(m.layers.map((l) => l.mediaType), ['application/vnd.docker.image.rootfs.diff.tar']);
    });
  });
});

describe('gantry import: bad input leaves nothing in the cache', () => {
  const img = buildImage({ format: 'oci', seed: 'bad' });
  const good = (): Files => ociLayout([{ image: img, refName: 'docker.io/library/bad:1' }]);

  const cases: Array<{ name: string; make: () => Promise<string>; error: RegExp }> = [
    {
      name: 'a truncated tar',
      make: async () => {
        const whole = await tarOf(entriesOf(good()));
        const file = path.join(work, 'truncated.tar');
        await writeFile(file, whole.subarray(0, whole.length - 1024 - 700));
        return file;
      },
      error: /truncated\.tar: .*(truncated|end)/i,
    },
    {
      name: 'a blob whose bytes do not match its digest',
      make: () => {
        const files = good();
        const layer = img.blobs[1];
        assert.ok(layer);
        files[`blobs/${layer.digest.replace(':', '/')}`] = Buffer.concat([layer.bytes, Buffer.from('x')]);
        return archive('mismatch.tar', files);
      },
      error: /mismatch\.tar: entry "blobs\/sha256\/[0-9a-f]+": bytes do not match the digest its name gives/,
    },
    { name: 'a ../ path', make: () => archive('dotdot.tar', [...entriesOf(good()), { name: '../escape', data: Buffer.from('x') }]), error: /dotdot\.tar: entry "\.\.\/escape": path leaves the archive/ },
    { name: 'an absolute path', make: () => archive('abs.tar', [{ name: '/etc/evil', data: Buffer.from('x') }, ...entriesOf(good())]), error: /abs\.tar: entry "\/etc\/evil": absolute or unsafe path/ },
    { name: 'a symlink to an absolute path', make: () => archive('symlink.tar', [...entriesOf(good()), { name: 'link', header: { type: 'symlink', linkname: '/etc/passwd' } }]), error: /symlink\.tar: entry "link": symlink to "\/etc\/passwd": absolute or unsafe target/ },
    { name: 'a symlink that climbs out of the archive', make: () => archive('symlink-out.tar', [...entriesOf(good()), { name: 'a/link', header: { type: 'symlink', linkname: '../../etc/passwd' } }]), error: /symlink-out\.tar: entry "a\/link": symlink to "\.\.\/\.\.\/etc\/passwd" leaves the archive/ },
    { name: 'a symlink to nothing in the archive', make: () => archive('symlink-dangling.tar', [...entriesOf(good()), { name: 'a/link', header: { type: 'symlink', linkname: '../missing' } }]), error: /symlink-dangling\.tar: entry "a\/link": symlink to "missing", which is not a regular file in the archive/ },
    { name: 'a symlink loop', make: () => archive('symlink-loop.tar', [...entriesOf(good()), { name: 'x', header: { type: 'symlink', linkname: 'y' } }, { name: 'y', header: { type: 'symlink', linkname: 'x' } }]), error: /symlink-loop\.tar: entry "x": symlink to "y", which is not a regular file in the archive/ },
    {
      name: 'a blob symlink to another blob',
      make: () => {
        const [config, layer] = img.blobs;
        assert.ok(config && layer);
        const files = good();
        const layerEntry = `blobs/${layer.digest.replace(':', '/')}`;
        delete files[layerEntry];
        return archive('symlink-blob.tar', [...entriesOf(files), { name: layerEntry, header: { type: 'symlink', linkname: config.digest.slice('sha256:'.length) } }]);
      },
      error: /symlink-blob\.tar: entry "blobs\/sha256\/[0-9a-f]+": bytes do not match the digest its name gives/,
    },
    { name: 'a hardlink', make: () => archive('hardlink.tar', [...entriesOf(good()), { name: 'hard', header: { type: 'link', linkname: 'index.json' } }]), error: /hardlink\.tar: entry "hard": link entries are not accepted/ },
    { name: 'an unknown format', make: () => archive('unknown.tar', { 'hello.txt': 'hi' }), error: /unknown\.tar: unknown format/ },
    { name: 'not a tar at all', make: async () => { const f = path.join(work, 'garbage.tar'); await writeFile(f, Buffer.alloc(3000, 7)); return f; }, error: /garbage\.tar: / },
    { name: 'a missing file', make: () => Promise.resolve(path.join(work, 'nope.tar')), error: /nope\.tar: no such file or directory/ },
    {
      name: 'a manifest naming a blob the archive lacks',
      make: () => {
        const files = good();
        delete files[`blobs/${img.blobs[2]?.digest.replace(':', '/') ?? ''}`];
        return archive('missing-blob.tar', files);
      },
      error: /missing-blob\.tar: entry "blobs\/sha256\/[0-9a-f]+": is referenced but not in the archive/,
    },
  ];
  for (const c of cases) {
    it(`${c.name}: one line naming the file (and entry), nothing cached, nothing written outside`, async () => {
      const file = await c.make();
      const before = (await readdir(work)).sort();
      await withTempCache(async (tc) => {
        const err = await run(tc, file).then(() => undefined, (e: unknown) => e as Error);
        assert.ok(err, 'import must fail');
        assert.match(err.message, c.error);
        assert.ok(!err.message.includes('\n'), 'one line');
        await assertEmpty(tc);
        assert.equal(await tc.cache.getTag(UPSTREAM, 'library/bad', '1'), undefined);
      });
      assert.deepEqual((await readdir(work)).sort(), before, 'nothing written beside the archive');
      assert.deepEqual(await readdir(path.dirname(work)).then((n) => n.includes('escape')), false);
    });
  }

  it('a symlink inside a layout directory', async () => {
    const dir = path.join(work, 'dir-with-link');
    for (const [name, data] of Object.entries(good())) {
      await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await writeFile(path.join(dir, name), data);
    }
    await symlink('/etc/passwd', path.join(dir, 'blobs', 'evil'));
    await withTempCache(async (c) => {
      await assert.rejects(run(c, dir), /dir-with-link: entry "blobs\/evil": symlinks and special files are not accepted/);
      await assertEmpty(c);
    });
  });
});

describe('gantry import --pin', () => {
  const everything = (image: BuiltImage | BuiltIndex): string[] =>
    'children' in image ? [image.manifestDigest, ...image.children.flatMap(everything)] : [image.manifestDigest, ...image.blobs.map((b) => b.digest)];

  it('pins each image under its tag (its digest when untagged) with every digest it consists of: index, children, configs, layers', async () => {
    const index = buildIndex({ format: 'oci', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }], seed: 'pin-multi' });
    const single = buildImage({ format: 'oci', seed: 'pin-single' });
    const tagged = await archive('pin-tagged.tar', ociLayout([{ image: index, refName: 'docker.io/team/multi:2' }, { image: single, refName: 'docker.io/library/one:1' }]));
    const untagged = await archive('pin-untagged.tar', ociLayout([{ image: buildImage({ format: 'oci', seed: 'pin-bare' }) }]));
    await withTempCache(async (c) => {
      const s = await importArchive(await openArchive(tagged), c.cache, { upstream: UPSTREAM, pin: true });
      assert.deepEqual(s.images.map((i) => i.pinned), [true, true]);
      const pins = new Map(c.cache.pins().map((p) => [`${p.repo}:${p.reference}`, p]));
      assert.deepEqual(new Set(pins.get('team/multi:2')?.digests), new Set(everything(index)));
      assert.deepEqual(new Set(pins.get('library/one:1')?.digests), new Set(everything(single)));
      assert.equal(pins.get('team/multi:2')?.cachedDigests, new Set(everything(index)).size, 'all of it is cached');
      const bare = await importArchive(await openArchive(untagged), c.cache, { upstream: UPSTREAM, pin: true, repository: 'site/bare' });
      assert.ok(c.cache.pins().some((p) => p.repo === 'site/bare' && p.reference === bare.images[0]?.digest));
    });
  });

  it('without --pin nothing is pinned', async () => {
    const file = await archive('nopin.tar', ociLayout([{ image: buildImage({ format: 'oci', seed: 'nopin' }), refName: 'docker.io/library/nopin:1' }]));
    await withTempCache(async (c) => {
      const s = await run(c, file);
      assert.equal(s.images[0]?.pinned, undefined);
      assert.deepEqual(c.cache.pins(), []);
    });
  });

  it('an import that fails while writing gives back the pins as they were: a new one released, an earlier one of the same reference restored', async () => {
    const img = buildImage({ format: 'oci', seed: 'pin-fail' });
    const file = await archive('pin-fail.tar', ociLayout([{ image: img, refName: 'docker.io/library/fail:1' }, { image: buildImage({ format: 'oci', seed: 'pin-fail-2' }), refName: 'docker.io/library/fresh:1' }]));
    await withTempCache(async (c) => {
      const earlier = { upstream: UPSTREAM, repo: 'library/fail', reference: '1', digests: [img.manifestDigest as Digest], pinnedAt: 1 };
      await c.cache.pin(earlier);
      const source = await openArchive(file);
      let passes = 0;
      // The second pass drops a layer, as if the file changed between the passes.
      const changing = { label: source.label, forEachFile: (onFile: Parameters<typeof source.forEachFile>[0]) => {
        passes++;
        return source.forEachFile((name, size, body) => (passes === 2 && name.endsWith(img.blobs[1]?.digest.slice(7) ?? '-') ? Promise.resolve() : onFile(name, size, body)));
      } };
      await assert.rejects(importArchive(changing, c.cache, { upstream: UPSTREAM, pin: true }), /changed between the two passes/);
      assert.deepEqual(c.cache.pins().map((p) => [p.repo, p.reference, p.digests, p.pinnedAt]), [['library/fail', '1', [img.manifestDigest], 1]]);
    });
  });
});
