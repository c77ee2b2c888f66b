// gantry export against a real docker-registry and a real Gantry process: through the running
// instance (GET /admin/export, the index is locked) and from the stopped cache; every blob in the
// archive hashes to its name and every manifest digest is the registry's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { MANIFEST_ACCEPT, buildImage, buildIndex, pushImage } from '../fixtures/images.ts';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { blobOf, readArchive, type ReadArchive } from './export-archive.ts';

const execFileP = promisify(execFile);

const images = {
  'fx/docker:v1': buildImage({ format: 'docker', seed: 'export-docker' }),
  'fx/oci:v1': buildImage({ format: 'oci', seed: 'export-oci' }),
  'fx/multi:v1': buildIndex({ format: 'oci', seed: 'export-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] }),
} satisfies Record<string, BuiltImage | BuiltIndex>;
const late = buildImage({ format: 'oci', seed: 'export-late' });

let registry: UpstreamRegistry;
let fwd: CountingForwarder;
let gantry: GantryProcess | undefined;
let tmp: string;
let cacheDir: string;

/** `bin/gantry export ...` on this test's cache; never throws: the exit code and stderr are the result. */
async function gantryExport(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const r = await execFileP('bin/gantry', ['export', ...args], {
      timeout: 60_000,
      env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url, GANTRY_LOG_LEVEL: 'warn' },
    });
    return { code: 0, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: unknown; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stderr: e.stderr ?? String(err) };
  }
}

async function get(url: string): Promise<Buffer> {
  const res = await request(url, { headers: { accept: MANIFEST_ACCEPT }, headersTimeout: 30_000, bodyTimeout: 30_000 });
  assert.equal(res.statusCode, 200, url);
  return Buffer.from(await res.body.arrayBuffer());
}

/** A client's pull through Gantry: the manifest, an index's children, every blob. */
async function pullThrough(base: string, repo: string, tag: string, image: BuiltImage | BuiltIndex): Promise<void> {
  await get(`${base}/v2/${repo}/manifests/${tag}`);
  for (const child of 'children' in image ? image.children : [image]) {
    await get(`${base}/v2/${repo}/manifests/${child.manifestDigest}`);
    for (const b of child.blobs) await get(`${base}/v2/${repo}/blobs/${b.digest}`);
  }
}

function allBlobs(image: BuiltImage | BuiltIndex): string[] {
  return 'children' in image ? [image.manifestDigest, ...image.children.flatMap(allBlobs)] : [image.manifestDigest, ...image.blobs.map((b) => b.digest)];
}

/** The archive of the three images, whole: every name, digest and byte as the registry has them. */
function assertWholeArchive(a: ReadArchive): void {
  assert.deepEqual(a.badBlobs, [], 'every blob hashes to its name');
  assert.deepEqual(JSON.parse(a.files.get('oci-layout')?.toString() ?? '{}'), { imageLayoutVersion: '1.0.0' });
  const byName = new Map(a.index.manifests.map((m) => [m.annotations?.['org.opencontainers.image.ref.name'], m]));
  for (const [ref, image] of Object.entries(images)) {
    const entry = byName.get(`docker.io/${ref}`);
    assert.ok(entry, `index.json names docker.io/${ref}`);
    assert.equal(entry.digest, image.manifestDigest, `${ref}: the registry's digest`);
    assert.equal(entry.mediaType, 'children' in image ? 'application/vnd.oci.image.index.v1+json' : 'application/vnd.oci.image.manifest.v1+json');
    for (const d of allBlobs(image)) assert.ok(blobOf(a, d), `${ref}: blob ${d} in the archive`);
    assert.ok(blobOf(a, image.manifestDigest)?.equals(image.manifest), `${ref}: manifest bytes unchanged`);
  }
  assert.deepEqual(a.legacy.map((l) => l.RepoTags).sort(), [['docker.io/fx/docker:v1'], ['docker.io/fx/multi:v1'], ['docker.io/fx/oci:v1']]);
  for (const row of a.legacy) for (const p of [row.Config, ...row.Layers]) assert.ok(a.files.has(p), `manifest.json points at ${p}`);
}

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'export-test-'));
  cacheDir = path.join(tmp, 'cache');
  registry = await startUpstreamRegistry({ storage: 'filesystem' });
  fwd = await startCountingForwarder({ target: registry.url });
  for (const [ref, image] of Object.entries(images)) {
    const [repo = '', tag = ''] = ref.split(':');
    await pushImage(registry.url, repo, tag, image);
  }
  await pushImage(registry.url, 'fx/late', 'v1', late);
  gantry = await startGantryProcess({ GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url });
  for (const [ref, image] of Object.entries(images)) {
    const [repo = '', tag = ''] = ref.split(':');
    await pullThrough(gantry.url, repo, tag, image);
  }
});

after(async () => {
  await gantry?.kill('SIGTERM');
  await fwd?.stop();
  await registry?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

test('while Gantry serves the cache, export streams it from the running instance, 0 requests upstream', async () => {
  fwd.reset();
  const out = path.join(tmp, 'running.tar');
  const r = await gantryExport('fx/docker:v1', 'fx/oci:v1', 'fx/multi:v1', '-o', out, '--url', gantry?.url ?? '');
  assert.equal(r.code, 0, r.stderr);
  assertWholeArchive(await readArchive(out));
  assert.equal(fwd.requests.length, 0, 'everything came from the cache');
});

test('--platform linux/arm64 writes a new index with only arm64 manifests and blobs', async () => {
  const out = path.join(tmp, 'arm64.tar');
  const r = await gantryExport('fx/multi:v1', '-o', out, '--platform', 'linux/arm64', '--url', gantry?.url ?? '');
  assert.equal(r.code, 0, r.stderr);
  const a = await readArchive(out);
  assert.deepEqual(a.badBlobs, []);
  const [entry] = a.index.manifests;
  assert.ok(entry);
  assert.notEqual(entry.digest, images['fx/multi:v1'].manifestDigest, 'a narrowed index is Gantry\'s own');
  const [amd64, arm64] = images['fx/multi:v1'].children;
  assert.ok(amd64 && arm64);
  const index = JSON.parse(blobOf(a, entry.digest)?.toString() ?? '{}') as { manifests: Array<{ digest: string }> };
  assert.deepEqual(index.manifests.map((m) => m.digest), [arm64.manifestDigest]);
  const names = new Set([...a.files.keys()].filter((n) => n.startsWith('blobs/')));
  assert.deepEqual(names, new Set([entry.digest, ...allBlobs(arm64)].map((d) => `blobs/sha256/${d.slice(7)}`)), 'only arm64 content');
});

test('an uncached image is an error naming it, exit 1, and no file left behind', async () => {
  const out = path.join(tmp, 'missing.tar');
  const r = await gantryExport('fx/docker:v1', 'fx/late:v1', '-o', out, '--url', gantry?.url ?? '');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^gantry export: .*fx\/late:v1.*not cached/m);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.ok(!existsSync(out));
  assert.deepEqual((await readdir(tmp)).filter((f) => f.includes('partial')), [], 'no temp file either');
});

test('GET /admin/export: an uncached image is a 404 OCI error naming it, a bad platform or no ref a 400, never a 500', async () => {
  const base = `${gantry?.url ?? ''}/admin/export`;
  const cases: Array<[string, number, string, RegExp]> = [
    ['?ref=fx/nope:v1', 404, 'MANIFEST_UNKNOWN', /docker\.io\/fx\/nope:v1: tag v1 is not cached/],
    ['?ref=fx/multi:v1&platform=linux/s390x', 404, 'MANIFEST_UNKNOWN', /no manifest for linux\/s390x/],
    ['?ref=fx/oci:v1&platform=linux', 400, 'NAME_INVALID', /invalid platform "linux"/],
    ['?ref=UPPER:case', 400, 'NAME_INVALID', /invalid image reference/],
    ['', 400, 'NAME_INVALID', /at least one ref=/],
  ];
  for (const [query, status, code, message] of cases) {
    const res = await request(`${base}${query}`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    const body = (await res.body.json()) as { errors: Array<{ code: string; message: string }> };
    assert.equal(res.statusCode, status, query);
    assert.equal(body.errors[0]?.code, code, query);
    assert.match(body.errors[0]?.message ?? '', message, query);
  }
});

test('bad arguments are one line naming them and exit 2; an unwritable -o is one line and exit 1', async () => {
  const platform = await gantryExport('fx/oci:v1', '-o', path.join(tmp, 'p.tar'), '--platform', 'linux');
  assert.equal(platform.code, 2);
  assert.match(platform.stderr, /^gantry export: invalid platform "linux"/);
  const noOut = await gantryExport('fx/oci:v1');
  assert.equal(noOut.code, 2);
  assert.match(noOut.stderr, /-o FILE/);
  const noRef = await gantryExport('-o', path.join(tmp, 'n.tar'));
  assert.equal(noRef.code, 2);
  assert.match(noRef.stderr, /image reference/);
  const nowhere = path.join(tmp, 'no-such-dir', 'x.tar');
  const r = await gantryExport('fx/oci:v1', '-o', nowhere, '--url', gantry?.url ?? '');
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /no-such-dir/);
});

test('--fetch pulls an uncached image through the running Gantry, then exports it', async () => {
  fwd.reset();
  const out = path.join(tmp, 'late.tar');
  const r = await gantryExport('fx/late:v1', '-o', out, '--fetch', '--url', gantry?.url ?? '');
  assert.equal(r.code, 0, r.stderr);
  const a = await readArchive(out);
  assert.deepEqual(a.badBlobs, []);
  assert.equal(a.index.manifests[0]?.digest, late.manifestDigest);
  for (const b of late.blobs) assert.equal(fwd.count({ method: 'GET', pathIncludes: b.digest }), 1, `one upstream GET of ${b.digest}`);
});

test('on a terminal, export draws a progress bar of bytes (cli-progress), then the summary', async () => {
  const out = path.join(tmp, 'tty.tar');
  // util-linux `script` gives the command a pseudo-terminal and copies what it draws to stdout.
  const cmd = `stty cols 200; bin/gantry export fx/docker:v1 -o ${out} --url ${gantry?.url ?? ''}`;
  const { stdout } = await execFileP('script', ['-qefc', cmd, '/dev/null'], {
    timeout: 60_000,
    env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url, GANTRY_LOG_LEVEL: 'warn' },
  });
  // Escape sequences out (cursor saves, line clears); the bar's final state stays.
  const screen = stdout.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[78])/g, '');
  const bars = [...screen.matchAll(/export \[[^\]]+\] (\d+)% (\d+)\/(\d+) bytes/g)];
  const last = bars.at(-1);
  assert.ok(last, screen);
  assert.deepEqual([last[1], last[2]], ['100', last[3]], 'the bar ends full, at the size of the archive written');
  assert.equal(Number(last[3]), statSync(out).size);
  assert.match(screen, /exported .* to .*tty\.tar/);
});

test('with Gantry stopped, export reads the cache directly and writes the same archive', async () => {
  await gantry?.kill('SIGTERM');
  gantry = undefined;
  fwd.reset();
  const out = path.join(tmp, 'stopped.tar');
  const r = await gantryExport('fx/docker:v1', 'fx/oci:v1', 'fx/multi:v1', '-o', out, '--url', 'http://127.0.0.1:9');
  assert.equal(r.code, 0, r.stderr);
  assertWholeArchive(await readArchive(out));
  assert.ok((await readFile(out)).equals(await readFile(path.join(tmp, 'running.tar'))), 'byte-identical to the export through the running instance');
  assert.match(r.stderr, /exported 3 image\(s\), \d+ blobs, \d+ bytes/);
  assert.equal(fwd.requests.length, 0);

  const missing = path.join(tmp, 'stopped-missing.tar');
  const bad = await gantryExport('fx/nope:v9', '-o', missing);
  assert.equal(bad.code, 1, bad.stderr);
  assert.match(bad.stderr, /^gantry export: docker\.io\/fx\/nope:v9: tag v9 is not cached/);
  assert.ok(!existsSync(missing));
});
