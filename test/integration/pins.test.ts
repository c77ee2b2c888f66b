/**
 * Pins for real: `gantry import --pin`, `gantry pins` and `gantry unpin` as a user runs them, on a
 * stopped cache and through a real Gantry process that holds it, with a real docker-registry
 * upstream behind a counting forwarder. Under a budget smaller than what is pulled, the unpinned
 * images are evicted (they go upstream again) while the pinned one is served with 0 upstream requests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { entriesOf, ociLayout, tarOf } from '../fixtures/archives.ts';
import { buildImage, makeLayer, MANIFEST_ACCEPT, pushImage, sha256, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { runGantry, startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { metricValue } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const ADMIN_TOKEN = 'pins-test-admin-token';
const LAYER = 30_000;
/** Room for about three of the images below: the fourth pulled forces eviction. */
const BUDGET = 100_000;

/** An image whose one layer is `bytes` of incompressible data, so its size in the cache is known. */
function sizedImage(seed: string, bytes: number): BuiltImage {
  return buildImage({ format: 'oci', seed, layers: [makeLayer({ [`data-${seed}`]: randomBytes(bytes) })] });
}

const pinned = sizedImage('pinned', LAYER);
const extra = sizedImage('extra', 2_000);
const big = sizedImage('big', BUDGET + 20_000);
const others = ['x1', 'x2', 'x3', 'x4'].map((seed) => ({ repo: `site/${seed}`, image: sizedImage(seed, LAYER) }));

let work: string;
let registry: UpstreamRegistry;
let fwd: CountingForwarder;
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'gantry-pins-int-'));
  registry = await startUpstreamRegistry();
  fwd = await startCountingForwarder({ target: registry.url });
  for (const o of others) await pushImage(registry.url, o.repo, '1', o.image);
  await writeFile(path.join(work, 'pinned.tar'), await tarOf(entriesOf(ociLayout([{ image: pinned, refName: 'docker.io/site/pinned:1' }]))));
  await writeFile(path.join(work, 'extra.tar'), await tarOf(entriesOf(ociLayout([{ image: extra, refName: 'docker.io/site/extra:1' }]))));
  await writeFile(path.join(work, 'big.tar'), await tarOf(entriesOf(ociLayout([{ image: big, refName: 'docker.io/site/big:1' }]))));
});
after(async () => {
  await fwd?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});


/** A config file for one cache: the forwarder as docker.io, the budget, the admin token. */
async function configFile(name: string, extraSettings: Record<string, unknown> = {}): Promise<{ file: string; cacheDir: string }> {
  const cacheDir = path.join(work, `cache-${name}`);
  const file = path.join(work, `${name}.json`);
  await writeFile(file, JSON.stringify({ cacheDir, upstreams: [{ host: 'docker.io', url: fwd.url }], maxCacheBytes: BUDGET, adminToken: ADMIN_TOKEN, logLevel: 'warn', ...extraSettings }));
  return { file, cacheDir };
}

/** Gantry serving that config, as a real process logging to `<config>.log`; the test kills it by PID in finally. */
function serve(file: string): Promise<GantryProcess> {
  return startGantryProcess({}, ['-c', file], { logFile: `${file}.log` });
}

const OVER_BUDGET = 'pinned content alone exceeds the cache budget';

async function pinsOf(file: string, url?: string): Promise<Array<{ ref: string; digests: number; cachedDigests: number; bytes: number }>> {
  const r = await runGantry(['pins', '--json', '-c', file, ...(url !== undefined ? ['--url', url] : [])]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Array<{ ref: string; digests: number; cachedDigests: number; bytes: number }>;
}

async function get(url: string): Promise<Buffer> {
  const res = await fetch(url, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(res.status, 200, url);
  return Buffer.from(await res.arrayBuffer());
}

/** A client's whole pull through Gantry: the manifest by tag, then the config and layers; every body verified. */
async function pull(base: string, repo: string, image: BuiltImage): Promise<void> {
  assert.equal(sha256(await get(`${base}/v2/${repo}/manifests/1`)), image.manifestDigest, repo);
  for (const b of image.blobs) assert.equal(sha256(await get(`${base}/v2/${repo}/blobs/${b.digest}`)), b.digest, `${repo} ${b.digest}`);
}

describe('gantry import --pin, gantry pins, gantry unpin', () => {
  it('on a stopped cache, then through the running Gantry that holds it, then stopped again', async () => {
    const { file } = await configFile('cli');
    const imported = await runGantry(['import', '--pin', '-c', file, path.join(work, 'pinned.tar')]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, new RegExp(`^imported site/pinned:1 ${pinned.manifestDigest}, pinned$`, 'm'));
    const table = await runGantry(['pins', '-c', file]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^REF\s+DIGESTS CACHED\s+BYTES\s+PINNED AT\n/);
    assert.match(table.stdout, /^docker\.io\/site\/pinned:1\s+3\/3\s+\d+\s+\d{4}-\d\d-\d\dT/m, 'manifest, config and layer, all cached');
    const released = await runGantry(['unpin', '-c', file, 'site/pinned:1']);
    assert.equal(released.code, 0, released.stderr);
    assert.match(released.stdout, /^unpinned docker\.io\/site\/pinned:1 \(3 digests, 3 cached, \d+ bytes\)\n$/);
    assert.deepEqual(await pinsOf(file), []);

    assert.equal((await runGantry(['import', '--pin', '-c', file, path.join(work, 'pinned.tar')])).code, 0);
    const g = await serve(file);
    try {
      assert.deepEqual((await pinsOf(file, g.url)).map((p) => p.ref), ['docker.io/site/pinned:1'], 'listed by the running instance');
      const throughServer = await runGantry(['unpin', '-c', file, '--url', g.url, 'docker.io/site/pinned:1']);
      assert.equal(throughServer.code, 0, throughServer.stderr);
      assert.match(throughServer.stdout, /^unpinned docker\.io\/site\/pinned:1 /);
      assert.deepEqual(await pinsOf(file, g.url), []);
      const importedThrough = await runGantry(['import', '--pin', '-c', file, '--url', g.url, path.join(work, 'extra.tar')]);
      assert.equal(importedThrough.code, 0, importedThrough.stderr);
      assert.match(importedThrough.stderr, /importing through the running Gantry/);
      assert.match(importedThrough.stdout, new RegExp(`^imported site/extra:1 ${extra.manifestDigest}, pinned$`, 'm'));
      assert.equal(await metricValue(g.url, 'gantry_pinned_images'), 1);
    } finally {
      await g.kill('SIGTERM');
    }
    assert.deepEqual((await pinsOf(file)).map((p) => p.ref), ['docker.io/site/extra:1'], 'the pin made through the server is in the stopped cache');
    const offline = await runGantry(['unpin', '-c', file, 'site/extra:1']);
    assert.equal(offline.code, 0, offline.stderr);
    assert.deepEqual(await pinsOf(file), []);
  });
});

describe('pinned images under a budget smaller than the cache', () => {
  it('the unpinned images are evicted and go upstream again; the pinned one is served with 0 upstream requests; pins over the budget are logged', async () => {
    const { file } = await configFile('evict');
    assert.equal((await runGantry(['import', '--pin', '-c', file, path.join(work, 'pinned.tar')])).code, 0);
    const g = await serve(file);
    try {
      // The pinned image is now the least recently used entry: the first the LRU would take.
      for (const o of others) await pull(g.url, o.repo, o.image);
      fwd.reset();
      await pull(g.url, 'site/pinned', pinned);
      assert.equal(fwd.requests.length, 0, 'the pinned image came from the cache');
      const x1 = others[0];
      assert.ok(x1);
      await pull(g.url, x1.repo, x1.image);
      assert.ok(fwd.count({ method: 'GET', pathIncludes: '/blobs/' }) > 0, 'the first unpinned image was evicted and fetched again');
      assert.equal(await metricValue(g.url, 'gantry_pinned_images'), 1);
      const [listed] = await pinsOf(file, g.url);
      assert.equal(await metricValue(g.url, 'gantry_pinned_bytes'), listed?.bytes);
      assert.ok((listed?.bytes ?? 0) > LAYER);
      assert.ok(!(await readFile(`${file}.log`, 'utf8')).includes(OVER_BUDGET));

      // A second pinned image larger than the whole budget: kept, and said once.
      const r = await runGantry(['import', '--pin', '-c', file, '--url', g.url, path.join(work, 'big.tar')]);
      assert.equal(r.code, 0, r.stderr);
      const warned = (await readFile(`${file}.log`, 'utf8')).split('\n').filter((l) => l.includes(OVER_BUDGET));
      assert.equal(warned.length, 1, 'said once');
      assert.equal((JSON.parse(warned[0] ?? '{}') as { maxCacheBytes?: number }).maxCacheBytes, BUDGET);
      fwd.reset();
      await pull(g.url, 'site/big', big);
      await pull(g.url, 'site/pinned', pinned);
      assert.equal(fwd.requests.length, 0, 'both pinned images came from the cache');
      assert.deepEqual((await pinsOf(file, g.url)).map((p) => [p.ref, p.cachedDigests, p.digests]), [['docker.io/site/big:1', 3, 3], ['docker.io/site/pinned:1', 3, 3]]);
    } finally {
      await g.kill('SIGTERM');
    }
  });
});

describe('bad input', () => {
  it('an unknown ref exits 1 naming it; DELETE without a ref is a 400; the admin token is required when configured', async () => {
    const { file } = await configFile('bad');
    const offline = await runGantry(['unpin', '-c', file, 'site/nothere:1']);
    assert.equal(offline.code, 1);
    assert.equal(offline.stderr, 'gantry unpin: site/nothere:1 is not pinned\n');
    const malformed = await runGantry(['unpin', '-c', file, 'Bad:Ref:']);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /^gantry unpin: invalid image reference "Bad:Ref:"[^\n]*\n$/);
    const g = await serve(file);
    try {
      const through = await runGantry(['unpin', '-c', file, '--url', g.url, 'site/nothere:1']);
      assert.equal(through.code, 1);
      assert.equal(through.stderr, 'gantry unpin: site/nothere:1 is not pinned\n');
      const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const noRef = await fetch(`${g.url}/admin/pins`, { method: 'DELETE', headers: auth });
      assert.equal(noRef.status, 400);
      assert.equal(((await noRef.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NAME_INVALID');
      const unknown = await fetch(`${g.url}/admin/pins?ref=site/nothere:1`, { method: 'DELETE', headers: auth });
      assert.equal(unknown.status, 404);
      assert.deepEqual(((await unknown.json()) as { errors: Array<{ code: string; message: string }> }).errors[0], { code: 'MANIFEST_UNKNOWN', message: 'site/nothere:1 is not pinned' });
      assert.equal((await fetch(`${g.url}/admin/pins`)).status, 401, 'no token');
      assert.equal((await fetch(`${g.url}/admin/pins`, { headers: { authorization: 'Bearer wrong' } })).status, 401, 'wrong token');
      const { file: wrongToken } = await configFile('bad-token', { cacheDir: path.join(work, 'cache-bad'), adminToken: 'wrong' });
      const denied = await runGantry(['pins', '-c', wrongToken, '--url', g.url]);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /^gantry pins: .* answered 401: admin endpoints need Authorization: Bearer <adminToken>\n$/);
    } finally {
      await g.kill('SIGTERM');
    }
  });
});
