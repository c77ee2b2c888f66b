// Self-test of the test fixtures against a real docker-registry and skopeo: the images must be
// valid to a real client and the counting forwarder must be a faithful, observable pass-through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { startUpstreamRegistry } from '../helpers/upstream-registry.ts';
import type { UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { startCountingForwarder } from '../helpers/counting-forwarder.ts';
import type { CountingForwarder } from '../helpers/counting-forwarder.ts';
import { getFreePort } from '../helpers/free-port.ts';
import { MANIFEST_ACCEPT, buildImage, buildIndex, makeTar, makeLayer, pushBlob, pushImage, randomBlob, sha256 } from '../fixtures/images.ts';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';

const execFileP = promisify(execFile);

const skopeo = async (...args: string[]): Promise<string> =>
  (await execFileP('skopeo', ['--insecure-policy', ...args], { timeout: 60_000, maxBuffer: 16 << 20 })).stdout;

let registry: UpstreamRegistry;
let fwd: CountingForwarder;
let tmp: string;
const images: Record<string, BuiltImage | BuiltIndex> = {
  'fx/docker:v1': buildImage({ format: 'docker', seed: 'docker' }),
  'fx/oci:v1': buildImage({ format: 'oci', seed: 'oci' }),
  'fx/multi:v1': buildIndex({
    format: 'oci',
    seed: 'multi',
    platforms: [
      { os: 'linux', arch: 'amd64' },
      { os: 'linux', arch: 'arm64' },
    ],
  }),
};

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'fixtures-test-'));
  // filesystem: the inmemory driver is quadratic on large uploads (64 MiB takes ~20 s).
  registry = await startUpstreamRegistry({ storage: 'filesystem' });
  fwd = await startCountingForwarder({ target: registry.url });
  for (const [ref, image] of Object.entries(images)) {
    const [repo = '', tag = ''] = ref.split(':');
    await pushImage(registry.url, repo, tag, image);
  }
});

after(async () => {
  await fwd?.stop();
  await registry?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

test('makeTar writes a ustar archive that tar(1) reads back', async () => {
  const file = path.join(tmp, 'x.tar');
  await writeFile(file, makeTar({ 'a.txt': 'hello\n', 'dir/b.bin': Buffer.alloc(513, 7) }));
  const { stdout } = await execFileP('tar', ['-tvf', file], { timeout: 10_000 });
  assert.match(stdout, /a\.txt/);
  assert.match(stdout, /513 .*dir\/b\.bin/);
  assert.equal((await execFileP('tar', ['-xOf', file, 'a.txt'], { timeout: 10_000 })).stdout, 'hello\n');
});

test('different seeds give different digests; same seed is reproducible', () => {
  assert.notEqual(buildImage({ format: 'oci', seed: 'a' }).manifestDigest, buildImage({ format: 'oci', seed: 'b' }).manifestDigest);
  assert.equal(buildImage({ format: 'oci', seed: 'a' }).manifestDigest, buildImage({ format: 'oci', seed: 'a' }).manifestDigest);
  assert.equal(randomBlob(1000, 's').digest, randomBlob(1000, 's').digest);
  assert.notEqual(randomBlob(1000, 's').digest, randomBlob(1000, 't').digest);
  assert.equal(makeLayer({ f: 'x' }).equals(makeLayer({ f: 'x' })), true);
});

test('manifests come back byte-identical through the forwarder, and are counted', async () => {
  fwd.reset();
  for (const [ref, image] of Object.entries(images)) {
    const [repo = '', tag = ''] = ref.split(':');
    const res = await fetch(`${fwd.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT }, signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), image.mediaType);
    assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), image.manifest);
  }
  const index = images['fx/multi:v1'];
  assert.ok(index && 'children' in index);
  for (const child of index.children) {
    const res = await fetch(`${fwd.url}/v2/fx/multi/manifests/${child.manifestDigest}`, { headers: { accept: MANIFEST_ACCEPT }, signal: AbortSignal.timeout(10_000) });
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), child.manifest);
    const blob = child.blobs[1];
    assert.ok(blob);
    const b = await fetch(`${fwd.url}/v2/fx/multi/blobs/${blob.digest}`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(b.status, 200);
    assert.equal(sha256(Buffer.from(await b.arrayBuffer())), blob.digest);
  }
  assert.equal(fwd.count({ method: 'GET', pathIncludes: '/manifests/' }), 5);
  assert.equal(fwd.count({ pathIncludes: /\/blobs\/sha256:/ }), 2);
  assert.equal(fwd.count({ method: 'HEAD' }), 0);
  assert.equal(fwd.requests.length, 7);
  assert.ok(fwd.requests.every((r) => r.status === 200 && r.done));
  const manifestBytes = Object.values(images).reduce((n, i) => n + i.manifest.length, 0) + index.children.reduce((n, c) => n + c.manifest.length, 0);
  const blobBytes = index.children.reduce((n, c) => n + (c.blobs[1]?.bytes.length ?? 0), 0);
  assert.equal(fwd.bytesOut(), manifestBytes + blobBytes);
});

test('skopeo inspect --raw returns the exact pushed bytes', async () => {
  for (const [ref, image] of Object.entries(images)) {
    const raw = await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${registry.host}/${ref}`);
    assert.equal(raw, image.manifest.toString('utf8'), ref);
  }
});

test('skopeo copy pulls the images into an OCI layout', async () => {
  const docker = path.join(tmp, 'docker-layout');
  await skopeo('copy', '--src-tls-verify=false', `docker://${registry.host}/fx/docker:v1`, `oci:${docker}:x`);
  const oci = path.join(tmp, 'oci-layout');
  await skopeo('copy', '--src-tls-verify=false', `docker://${registry.host}/fx/oci:v1`, `oci:${oci}:x`);
  const multi = path.join(tmp, 'multi-layout');
  await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${registry.host}/fx/multi:v1`, `oci:${multi}:x`);
  const index = images['fx/multi:v1'];
  assert.ok(index && 'children' in index);
  // With --all and no conversion, the index is stored verbatim.
  const layoutIndex = JSON.parse(await readFile(path.join(multi, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  assert.equal(layoutIndex.manifests[0]?.digest, index.manifestDigest);
});

test('htpasswd registry: 401 without credentials, push and skopeo work with them', async () => {
  const creds = { username: 'alice', password: 'pa$$ word:1' };
  const authed = await startUpstreamRegistry({ htpasswd: creds });
  try {
    const anon = await fetch(`${authed.url}/v2/`, { signal: AbortSignal.timeout(5000) });
    assert.equal(anon.status, 401);
    const image = buildImage({ format: 'docker', seed: 'authed' });
    await assert.rejects(pushImage(authed.url, 'private/img', 'v1', image), /HTTP 401/);
    await pushImage(authed.url, 'private/img', 'v1', image, creds);
    const raw = await skopeo('inspect', '--tls-verify=false', '--raw', '--creds', `${creds.username}:${creds.password}`, `docker://${authed.host}/private/img:v1`);
    assert.equal(raw, image.manifest.toString('utf8'));
  } finally {
    await authed.stop();
  }
});

test('large random blob streams through the forwarder intact', async () => {
  const blob = randomBlob(64 << 20, 'big');
  await pushBlob(registry.url, 'fx/big', blob);
  fwd.reset();
  const res = await fetch(`${fwd.url}/v2/fx/big/blobs/${blob.digest}`, { signal: AbortSignal.timeout(60_000) });
  assert.equal(res.status, 200);
  assert.equal(sha256(Buffer.from(await res.arrayBuffer())), blob.digest);
  assert.equal(fwd.bytesOut(), blob.bytes.length);
});

test('throttled forwarder: shared rate, in-progress requests visible, 502 when target is down', async () => {
  const blob = randomBlob(256 << 10, 'slow');
  await pushBlob(registry.url, 'fx/slow', blob);
  const slow = await startCountingForwarder({ target: registry.url, bytesPerSecond: 1 << 20, latencyMs: 50 });
  try {
    const t0 = performance.now();
    const get = async (): Promise<string> => {
      const res = await fetch(`${slow.url}/v2/fx/slow/blobs/${blob.digest}`, { signal: AbortSignal.timeout(10_000) });
      return sha256(Buffer.from(await res.arrayBuffer()));
    };
    const pending = Promise.all([get(), get()]);
    await sleep(150);
    // Both GETs are visible while their bodies are still trickling.
    assert.equal(slow.count({ method: 'GET', pathIncludes: blob.digest }), 2);
    assert.ok(slow.requests.every((r) => !r.done));
    assert.deepEqual(await pending, [blob.digest, blob.digest]);
    const elapsed = performance.now() - t0;
    // 512 KiB at 1 MiB/s shared ≈ 0.5 s (less the 20 ms initial burst).
    assert.ok(elapsed > 400, `too fast for the shared bucket: ${elapsed} ms`);
    assert.ok(elapsed < 3000, `too slow: ${elapsed} ms`);
    assert.equal(slow.bytesOut(), 2 * blob.bytes.length);

    slow.setTarget(`http://127.0.0.1:${await getFreePort()}`);
    const res = await fetch(`${slow.url}/v2/`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    assert.equal(res.status, 502);
    assert.equal(slow.requests.at(-1)?.status, 502);
  } finally {
    await slow.stop();
  }
});
