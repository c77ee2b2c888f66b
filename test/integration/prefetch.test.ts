// gantry prefetch against a real docker-registry and real Gantry processes: only the requested
// platforms are fetched (counted at a forwarder in front of the registry), prefetch and client
// pulls share one upstream GET per blob, a job survives kill -9 and resumes, bad input is a 400.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { request } from 'undici';
import { MANIFEST_ACCEPT, buildImage, buildIndex, pushImage, randomBlob, type BuiltImage, type BuiltIndex } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { api, finished, jobOf, submit, type Job } from '../helpers/prefetch-api.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const execFileP = promisify(execFile);

const multi = buildIndex({ format: 'oci', seed: 'prefetch-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] });
const small = buildImage({ format: 'docker', seed: 'prefetch-small' });
/** The README workflow's images, under the names it uses. */
const nginx = buildIndex({ format: 'docker', seed: 'readme-nginx', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] });
const redis = buildImage({ format: 'oci', seed: 'readme-redis' });
/** Two 3 MiB layers: behind a 2 MiB/s forwarder, a fill takes long enough to join or to kill. */
const big = buildImage({ format: 'oci', seed: 'prefetch-big', layers: [gzipSync(randomBlob(3 << 20, 'pf-1').bytes, { level: 0 }), gzipSync(randomBlob(3 << 20, 'pf-2').bytes, { level: 0 })] });

let registry: UpstreamRegistry;
let fwd: CountingForwarder;
let slow: CountingForwarder;
let tmp: string;
const running = new Set<GantryProcess>();

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'prefetch-test-'));
  registry = await startUpstreamRegistry({ storage: 'inmemory' });
  fwd = await startCountingForwarder({ target: registry.url });
  slow = await startCountingForwarder({ target: registry.url, bytesPerSecond: 2 << 20 });
  await pushImage(registry.url, 'fx/multi', 'v1', multi);
  await pushImage(registry.url, 'fx/small', 'v1', small);
  await pushImage(registry.url, 'fx/big', 'v1', big);
  await pushImage(registry.url, 'library/nginx', '1.27', nginx);
  await pushImage(registry.url, 'library/redis', '7.4', redis);
});

after(async () => {
  for (const g of running) await g.kill('SIGKILL');
  await fwd?.stop();
  await slow?.stop();
  await registry?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function gantryOn(upstream: CountingForwarder, cacheDir: string, extra: Record<string, string> = {}): Promise<GantryProcess> {
  const g = await startGantryProcess({ GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: upstream.url, ...extra });
  running.add(g);
  return g;
}

async function stop(g: GantryProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await g.kill(signal);
  running.delete(g);
}

/** `bin/gantry prefetch ...`; never throws: the exit code and output are the result. */
async function gantryPrefetch(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP('bin/gantry', ['prefetch', ...args], { timeout: 60_000, env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn' } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

async function get(url: string): Promise<Buffer> {
  const res = await request(url, { headers: { accept: MANIFEST_ACCEPT }, headersTimeout: 30_000, bodyTimeout: 30_000 });
  assert.equal(res.statusCode, 200, url);
  return Buffer.from(await res.body.arrayBuffer());
}

/** A client's pull of one image manifest and its blobs, checking every byte. */
async function pull(base: string, repo: string, tag: string, image: BuiltImage): Promise<void> {
  await get(`${base}/v2/${repo}/manifests/${tag}`);
  for (const b of image.blobs) assert.ok((await get(`${base}/v2/${repo}/blobs/${b.digest}`)).equals(b.bytes), b.digest);
}

function blobGets(f: CountingForwarder, digest: string): number {
  return f.count({ method: 'GET', pathIncludes: `/blobs/${digest}` });
}

function child(index: BuiltIndex, i: number): BuiltImage {
  const c = index.children[i];
  assert.ok(c);
  return c;
}

test('prefetch --platform linux/amd64 fetches the index, the amd64 manifest and its blobs only; a later amd64 pull costs 0 blob GETs', async () => {
  const g = await gantryOn(fwd, path.join(tmp, 'platform'));
  try {
    fwd.reset();
    const r = await gantryPrefetch('docker.io/fx/multi:v1', '--platform', 'linux/amd64', '--url', g.url);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`prefetched docker.io/fx/multi:v1 ${multi.manifestDigest}`));
    const [amd64, arm64] = [child(multi, 0), child(multi, 1)];
    assert.equal(fwd.count({ method: 'GET', pathIncludes: '/manifests/v1' }), 1);
    assert.equal(fwd.count({ method: 'GET', pathIncludes: `/manifests/${amd64.manifestDigest}` }), 1);
    assert.equal(fwd.count({ method: 'GET', pathIncludes: `/manifests/${arm64.manifestDigest}` }), 0, 'no arm64 manifest');
    for (const b of amd64.blobs) assert.equal(blobGets(fwd, b.digest), 1, `amd64 blob ${b.digest}`);
    for (const b of arm64.blobs) if (!amd64.blobs.some((a) => a.digest === b.digest)) assert.equal(blobGets(fwd, b.digest), 0, `arm64 blob ${b.digest}`);
    assert.equal(fwd.count({ pathIncludes: '/blobs/' }), amd64.blobs.length, 'nothing else');

    fwd.reset();
    await get(`${g.url}/v2/fx/multi/manifests/v1`);
    await pull(g.url, 'fx/multi', amd64.manifestDigest, amd64);
    assert.equal(fwd.count({ pathIncludes: '/blobs/' }), 0, 'the amd64 pull is served from the cache');
  } finally {
    await stop(g);
  }
});

test('a prefetch racing client pulls of the same image costs one upstream GET per blob', async () => {
  const g = await gantryOn(slow, path.join(tmp, 'race'));
  try {
    slow.reset();
    const job = await submit(g, { images: ['fx/big:v1'] });
    const pulls = [1, 2, 3].map(() => pull(g.url, 'fx/big', 'v1', big));
    await Promise.all(pulls);
    const done = await finished(g, job.id);
    assert.equal(done.state, 'done', JSON.stringify(done));
    for (const b of big.blobs) assert.equal(blobGets(slow, b.digest), 1, `blob ${b.digest}`);
  } finally {
    await stop(g);
  }
});

test('a job survives kill -9 and a graceful stop: after each restart it resumes, finishes, and its blobs are served without the upstream', async () => {
  const cacheDir = path.join(tmp, 'restart');
  let g = await gantryOn(slow, cacheDir);
  try {
    const job = await submit(g, { images: ['fx/small:v1', 'fx/big:v1'], pin: true });
    await waitFor('the big image to be part-way', async () => {
      const j = await jobOf(g, job.id);
      const bigImage = j.images[1];
      return bigImage && bigImage.state === 'running' && bigImage.bytesDone > 0 && bigImage.bytesDone < bigImage.bytes;
    }, { timeoutMs: 20_000, intervalMs: 50 });
    await stop(g, 'SIGKILL');
    g = await gantryOn(slow, cacheDir);
    // A graceful stop part-way interrupts the image: it is queued again, not failed.
    await waitFor('the big image to be part-way again', async () => {
      const bigImage = (await jobOf(g, job.id)).images[1];
      return bigImage && bigImage.state === 'running' && bigImage.bytesDone > 0 && bigImage.bytesDone < bigImage.bytes;
    }, { timeoutMs: 20_000, intervalMs: 50 });
    // (Were it marked failed, the job would end failed below: a failed image is not run again.)
    await stop(g, 'SIGTERM');
    g = await gantryOn(slow, cacheDir);
    const done = await finished(g, job.id);
    assert.equal(done.state, 'done', JSON.stringify(done));
    assert.deepEqual(done.images.map((i) => [i.ref, i.state, i.digest]), [
      ['docker.io/fx/small:v1', 'done', small.manifestDigest],
      ['docker.io/fx/big:v1', 'done', big.manifestDigest],
    ]);
    const big1 = done.images[1];
    assert.ok(big1);
    assert.equal(big1.blobsDone, big.blobs.length);
    assert.equal(big1.bytesDone, big1.bytes);
    const list = (await api(`${g.url}/admin/prefetch`, 'GET')).json as { jobs: Job[] };
    assert.deepEqual(list.jobs.map((j) => j.id), [job.id]);
    const metrics = (await (await request(`${g.url}/metrics`)).body.text());
    assert.match(metrics, /^gantry_pinned_images 2$/m, 'both images pinned');
    slow.reset();
    await pull(g.url, 'fx/big', 'v1', big);
    assert.equal(slow.count({ pathIncludes: '/blobs/' }), 0);
  } finally {
    await stop(g);
  }
});

test('bad input: a 400 naming what is wrong, a 404 for an unknown job; the CLI exits 2 or 1 saying why', async () => {
  const g = await gantryOn(fwd, path.join(tmp, 'bad'));
  try {
    const cases: Array<[string, RegExp]> = [
      ['not json', /not JSON/],
      ['[]', /JSON object/],
      ['{}', /images: expected a list/],
      ['{"images": []}', /at least one image/],
      ['{"images": ["Bad Ref!"]}', /invalid image reference "Bad Ref!"/],
      ['{"images": ["ghcr.io/org/app:1"]}', /ghcr\.io\/org\/app:1: no upstream is configured for ghcr\.io/],
      ['{"images": ["fx/small:v1"], "platform": ["linux/amd64"]}', /unknown field "platform"/],
      ['{"images": ["fx/small:v1"], "platforms": ["linux"]}', /platform/],
      ['{"images": ["fx/small:v1"], "pin": "yes"}', /pin: expected true or false/],
    ];
    for (const [body, message] of cases) {
      const r = await api(`${g.url}/admin/prefetch`, 'POST', body);
      assert.equal(r.status, 400, body);
      const err = (r.json as { errors: Array<{ code: string; message: string }> }).errors[0];
      assert.match(err?.message ?? '', message, body);
    }
    assert.equal((await api(`${g.url}/admin/prefetch/nope`, 'GET')).status, 404);
    assert.deepEqual((await api(`${g.url}/admin/prefetch`, 'GET')).json, { jobs: [] }, 'no bad request queued a job');

    const none = await gantryPrefetch('--url', g.url);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^gantry prefetch: name at least one image/m);
    const missing = await gantryPrefetch('--file', path.join(tmp, 'no-such-list'), '--url', g.url);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--file .*no-such-list: ENOENT/);
    const unreachable = await gantryPrefetch('fx/small:v1', '--url', 'http://127.0.0.1:9');
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /no Gantry answers at http:\/\/127\.0\.0\.1:9/);

    // A list with one image that does not exist: the rest is prefetched, the job fails, exit 1 naming it.
    const list = path.join(tmp, 'images.txt');
    await writeFile(list, '# edge site images\nfx/small:v1\n\nfx/missing:v1  # not pushed\n');
    const r = await gantryPrefetch('--file', list, '--url', g.url);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^prefetched docker\.io\/fx\/small:v1 /m);
    assert.match(r.stderr, /^failed docker\.io\/fx\/missing:v1: manifest: /m);
    assert.match(r.stderr, /1 image\(s\) done, 1 failed/);
  } finally {
    await stop(g);
  }
});

test('the README\'s prefetch workflow, run as written: amd64 only, both images pinned', async () => {
  const readme = await readFile('README.md', 'utf8');
  const block = /<!-- test: prefetch workflow -->\n```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'the README has the prefetch workflow block');
  const g = await gantryOn(fwd, path.join(tmp, 'readme'));
  try {
    // `gantry` on PATH, and the listen address in the environment, as an operator's shell has them.
    const work = await mkdtemp(path.join(tmp, 'readme-shell-'));
    await mkdir(path.join(work, 'bin'));
    await symlink(path.resolve('bin/gantry'), path.join(work, 'bin', 'gantry'));
    fwd.reset();
    const r = await execFileP('sh', ['-e', '-c', block], {
      cwd: work,
      timeout: 60_000,
      env: { ...process.env, PATH: `${path.join(work, 'bin')}:${process.env['PATH'] ?? ''}`, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn', GANTRY_LISTEN: new URL(g.url).host },
    });
    assert.match(r.stderr, /^prefetched docker\.io\/library\/nginx:1\.27 /m);
    assert.match(r.stderr, /^prefetched docker\.io\/library\/redis:7\.4 /m);
    const [amd64, arm64] = [child(nginx, 0), child(nginx, 1)];
    for (const b of arm64.blobs) if (!amd64.blobs.some((a) => a.digest === b.digest)) assert.equal(blobGets(fwd, b.digest), 0, `arm64 blob ${b.digest}`);
    for (const b of [...amd64.blobs, ...redis.blobs]) assert.equal(blobGets(fwd, b.digest), 1, b.digest);
    const metrics = await (await request(`${g.url}/metrics`)).body.text();
    assert.match(metrics, /^gantry_pinned_images 2$/m);
  } finally {
    await stop(g);
  }
});

test('on a TTY the CLI draws a bar per image (cli-progress), then the summary', async () => {
  const g = await gantryOn(fwd, path.join(tmp, 'tty'));
  try {
    // util-linux `script` gives the command a pseudo-terminal and copies what it draws to stdout.
    const cmd = `stty cols 200; bin/gantry prefetch docker.io/fx/small:v1 docker.io/fx/multi:v1 --url ${g.url}`;
    const r = await execFileP('script', ['-qefc', cmd, '/dev/null'], { timeout: 60_000, env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn' } });
    const screen = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    assert.match(screen, /docker\.io\/fx\/small:v1 \[[=\-\u2588\u2591]+\] 100% \d+\/\d+ bytes done/);
    assert.match(screen, /docker\.io\/fx\/multi:v1 \[[=\-\u2588\u2591]+\] 100% \d+\/\d+ bytes done/);
    assert.match(screen, /prefetch job [0-9a-f]+: 2 image\(s\) done/);
  } finally {
    await stop(g);
  }
});

test('an upstream that is down when the prefetch starts and comes back: the image is retried and the job finishes', async () => {
  const flaky = await startCountingForwarder({ target: 'http://127.0.0.1:9' });
  const g = await gantryOn(flaky, path.join(tmp, 'outage'));
  try {
    const job = await submit(g, { images: ['fx/small:v1'] });
    const retrying = await waitFor('the image to be retried', async () => {
      const image = (await jobOf(g, job.id)).images[0];
      return image?.state === 'running' && image.error?.includes('retrying') ? image : undefined;
    }, { timeoutMs: 10_000, intervalMs: 50 });
    assert.match(retrying.error ?? '', /upstream/);
    flaky.setTarget(registry.url);
    const done = await finished(g, job.id, 45_000);
    assert.equal(done.state, 'done', JSON.stringify(done));
    assert.equal(done.images[0]?.error, undefined);
  } finally {
    await stop(g);
    await flaky.stop();
  }
});

test('with adminToken set, the API wants the bearer token, and gantry prefetch sends the one its config names', async () => {
  const token = 'prefetch-test-admin-token';
  const config = path.join(tmp, 'token-config.json');
  await writeFile(config, JSON.stringify({ upstreams: [{ host: 'docker.io', url: fwd.url }], adminToken: token }));
  const g = await gantryOn(fwd, path.join(tmp, 'token'), { GANTRY_CONFIG: config });
  try {
    const anonymous = await api(`${g.url}/admin/prefetch`, 'POST', JSON.stringify({ images: ['fx/small:v1'] }));
    assert.equal(anonymous.status, 401);
    const wrong = path.join(tmp, 'wrong-token-config.json');
    await writeFile(wrong, JSON.stringify({ upstreams: [{ host: 'docker.io', url: fwd.url }], adminToken: 'not-it' }));
    const denied = await gantryPrefetch('fx/small:v1', '--url', g.url, '--config', wrong);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /^gantry prefetch: .* answered 401: admin endpoints need Authorization: Bearer <adminToken>$/m);
    const r = await gantryPrefetch('fx/small:v1', '--url', g.url, '--config', config);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^prefetched docker\.io\/fx\/small:v1 /m);
    assert.doesNotMatch(r.stderr + r.stdout, new RegExp(token), 'the token is never printed');
  } finally {
    await stop(g);
  }
});
