// Serving processes (workers): several processes share Gantry's port and send cache hits
// themselves; the main process owns every decision. Real bin/gantry against a real registry.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, readdir, rm, truncate } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { MANIFEST_ACCEPT, buildImage, pushBlob, pushImage, randomBlob, sha256, type Blob, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { runGantry, startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { alive, childPids } from '../helpers/processes.ts';

const MiB = 1024 * 1024;
const REPO = 'serving/test';
const WORKERS = 2;

let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let tmp: string;
const layer: Blob = randomBlob(MiB + 1, 'serving-layer');
let image: BuiltImage;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-serving-'));
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  fwd = await startCountingForwarder({ target: origin.url });
  await pushBlob(origin.url, REPO, layer);
  image = buildImage({ format: 'oci', seed: 'serving' });
  await pushImage(origin.url, REPO, 'v1', image);
});

after(async () => {
  await fwd?.stop();
  await origin?.stop();
  await rm(tmp, { recursive: true, force: true });
});


async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

/** A GET on a connection of its own (none kept from before); rejects if the body is cut. */
function getOnNewConnection(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('body cut')));
    }).on('error', reject);
  });
}

async function start(name: string, env: Record<string, string> = {}): Promise<{ g: GantryProcess; logFile: string; cacheDir: string }> {
  const cacheDir = join(tmp, name);
  const logFile = join(tmp, `${name}.log`);
  const g = await startGantryProcess({ GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url, GANTRY_WORKERS: String(WORKERS), GANTRY_LOG_LEVEL: 'info', ...env }, [], { logFile });
  // /healthz answers once the first serving process listens; every one does once this is logged.
  await waitFor('gantry listening', async () => (await logLines(logFile)).some((l) => l['msg'] === 'gantry listening'), { timeoutMs: 20_000 });
  return { g, logFile, cacheDir };
}

async function logLines(logFile: string): Promise<Array<Record<string, unknown>>> {
  return (await readFile(logFile, 'utf8'))
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Sum of one counter's samples whose labels include `labels`, from Prometheus text. */
function counter(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('serving processes', () => {
  test('hits are sent by the serving processes: every object fetched upstream once, bytes right, metrics and access log merged', async () => {
    const { g, logFile } = await start('hits');
    try {
      assert.equal((await childPids(g.pid)).length, WORKERS, 'serving processes started');
      const blobUrl = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
      const manifestUrl = `${g.url}/v2/${REPO}/manifests/${image.manifestDigest}`;
      const before = { blob: fwd.count({ method: 'GET', pathIncludes: layer.digest }), manifest: fwd.count({ method: 'GET', pathIncludes: image.manifestDigest }) };

      const first = await get(blobUrl);
      assert.equal(first.status, 200);
      assert.equal(first.headers['x-cache'], 'MISS');
      const ROUNDS = 30;
      for (let i = 0; i < ROUNDS; i++) {
        const r = await get(blobUrl);
        assert.equal(r.status, 200);
        assert.equal(r.headers['x-cache'], 'HIT');
        assert.equal(r.headers['content-length'], String(layer.bytes.length));
        assert.equal(r.headers['docker-content-digest'], layer.digest);
        assert.equal(sha256(r.body), layer.digest);
        assert.ok(typeof r.headers['x-request-id'] === 'string' && r.headers['x-request-id'].length > 0);
        assert.equal(r.headers['x-gantry-accel-file'], undefined, 'private headers never reach a client');
        const m = await get(manifestUrl, { accept: MANIFEST_ACCEPT });
        assert.equal(m.status, 200);
        assert.equal(m.headers['content-type'], image.mediaType);
        assert.equal(sha256(m.body), image.manifestDigest);
      }
      assert.equal(fwd.count({ method: 'GET', pathIncludes: layer.digest }) - before.blob, 1, 'the blob was fetched upstream once');
      assert.equal(fwd.count({ method: 'GET', pathIncludes: image.manifestDigest }) - before.manifest, 1, 'the manifest was fetched upstream once');

      // Served by the serving processes themselves: their access lines carry their number.
      const hits = await waitFor('access lines of the hits', async () => {
        const lines = (await logLines(logFile)).filter((l) => l['msg'] === 'request' && l['path'] === `/v2/${REPO}/blobs/${layer.digest}` && l['cache'] === 'hit');
        return lines.length >= ROUNDS ? lines : undefined;
      });
      assert.ok(hits.filter((l) => typeof l['worker'] === 'number').length >= ROUNDS - 1, 'hits after the first are logged by serving processes');
      assert.ok(hits.every((l) => l['bytes'] === layer.bytes.length && l['status'] === 200));

      // /metrics merges every process's counters.
      const metrics = await waitFor('merged hit counters', async () => {
        const text = (await get(`${g.url}/metrics`)).body.toString();
        return counter(text, 'gantry_requests_total', { kind: 'blob', result: 'hit', status: '200' }) >= ROUNDS ? text : undefined;
      });
      assert.equal(counter(metrics, 'gantry_requests_total', { kind: 'blob', result: 'hit', status: '200' }), ROUNDS);
      assert.equal(counter(metrics, 'gantry_requests_total', { kind: 'blob', result: 'miss' }), 1);
      assert.equal(counter(metrics, 'gantry_served_bytes_total', { kind: 'blob', source: 'cache' }), ROUNDS * layer.bytes.length);
    } finally {
      await g.kill('SIGTERM');
    }
  });

  test('clients of a blob being downloaded are sent it by the serving processes, tailing the one download', async () => {
    const slow = await startCountingForwarder({ target: origin.url, bytesPerSecond: 2 * MiB });
    const big = randomBlob(2 * MiB, 'serving-cold');
    await pushBlob(origin.url, REPO, big);
    const { g, logFile } = await start('cold', { GANTRY_UPSTREAM_URL: slow.url });
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${big.digest}`;
      const CLIENTS = 8;
      // Fresh connections, so the kernel spreads them over the serving processes; one asks for a range.
      const got = await Promise.all([
        ...Array.from({ length: CLIENTS - 1 }, () => getOnNewConnection(url)),
        getOnNewConnection(url, { range: 'bytes=1000-1999999' }),
      ]);
      for (const r of got.slice(0, -1)) {
        assert.equal(r.status, 200);
        assert.equal(sha256(r.body), big.digest);
      }
      assert.equal(got.at(-1)?.status, 206);
      assert.ok(got.at(-1)?.body.equals(big.bytes.subarray(1000, 2000000)));
      assert.equal(slow.count({ method: 'GET', pathIncludes: big.digest }), 1, 'one upstream download');
      const lines = await waitFor('access lines of every client', async () => {
        const l = (await logLines(logFile)).filter((x) => x['msg'] === 'request' && x['path'] === `/v2/${REPO}/blobs/${big.digest}`);
        return l.length >= CLIENTS ? l : undefined;
      });
      assert.equal(lines.length, CLIENTS, 'one line per client: the accel answers are not logged');
      assert.equal(lines.filter((l) => l['cache'] === 'miss').length, 1);
      assert.equal(lines.filter((l) => l['cache'] === 'coalesced').length, CLIENTS - 1);
      assert.ok(lines.every((l) => typeof l['worker'] === 'number'), `sent by the serving processes: ${JSON.stringify(lines)}`);
      const again = await get(url);
      assert.equal(again.headers['x-cache'], 'HIT');
      assert.equal(sha256(again.body), big.digest);
    } finally {
      await g.kill('SIGTERM');
      await slow.stop();
    }
  });

  test('a download that fails verification cuts every client tailing it, and nothing is cached', async () => {
    const wanted = randomBlob(2 * MiB, 'serving-wanted');
    const wrong = randomBlob(2 * MiB, 'serving-wrong').bytes;
    const liar = await startFakeUpstream(async (req, res) => {
      if (!req.url?.includes('/blobs/')) {
        res.writeHead(req.url === '/v2/' ? 200 : 404).end();
        return;
      }
      res.writeHead(200, { 'content-length': String(wrong.length), 'docker-content-digest': wanted.digest });
      // About a second, in slices, so the clients join while it is written.
      for (let off = 0; off < wrong.length && !res.destroyed; off += 128 * 1024) {
        res.write(wrong.subarray(off, off + 128 * 1024));
        await new Promise((r) => setTimeout(r, 60));
      }
      res.end();
    });
    const { g } = await start('liar', { GANTRY_UPSTREAM_URL: liar.url });
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${wanted.digest}`;
      const got = await Promise.all(Array.from({ length: 6 }, () => getOnNewConnection(url).catch((err: Error) => err)));
      for (const r of got) {
        // Cut (an error, or a body shorter than promised): never the whole wrong body as if it were right.
        if (r instanceof Error) continue;
        assert.ok(r.status !== 200 || r.body.length < wrong.length, `a client got ${r.body.length} bytes with status ${r.status}`);
      }
      const cachedFiles = await readdir(join(tmp, 'liar', 'blobs', 'sha256')).catch(() => []);
      assert.deepEqual(cachedFiles, [], 'nothing cached');
    } finally {
      await g.kill('SIGTERM');
      await liar.stop();
    }
  });

  test('a Range, a HEAD and an unsatisfiable Range are answered from a plan as the main process answers them', async () => {
    const { g } = await start('ranges');
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
      await get(url);
      // Several rounds: each connection may land on another process.
      for (let i = 0; i < 6; i++) {
        const part = await get(url, { range: 'bytes=1000-1999' });
        assert.equal(part.status, 206);
        assert.equal(part.headers['content-range'], `bytes 1000-1999/${layer.bytes.length}`);
        assert.deepEqual(part.body, layer.bytes.subarray(1000, 2000));
        const tail = await get(url, { range: 'bytes=-5' });
        assert.equal(tail.status, 206);
        assert.deepEqual(tail.body, layer.bytes.subarray(layer.bytes.length - 5));
        const head = await get(url, {}, 'HEAD');
        assert.equal(head.status, 200);
        assert.equal(head.headers['content-length'], String(layer.bytes.length));
        assert.equal(head.body.length, 0);
        const bad = await get(url, { range: `bytes=${layer.bytes.length}-` });
        assert.equal(bad.status, 416);
        assert.equal(bad.headers['x-cache'], 'HIT');
        assert.equal((JSON.parse(bad.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'RANGE_INVALID');
      }
    } finally {
      await g.kill('SIGTERM');
    }
  });

  test('an object removed from the cache is never sent from a plan again: the next request fetches it anew', async () => {
    const { g, cacheDir } = await start('forget');
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
      await get(url);
      for (let i = 0; i < 6; i++) assert.equal((await get(url)).headers['x-cache'], 'HIT');
      const fetched = fwd.count({ method: 'GET', pathIncludes: layer.digest });
      // Rot the file in place (same size), as a failing disk would; verify finds it and removes it.
      const hex = layer.digest.slice('sha256:'.length);
      const fh = await open(join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex), 'r+');
      await fh.write(Buffer.from('rotten bytes'), 0, 12, 100);
      await fh.close();
      const verified = await request(`${g.url}/admin/verify?remove=true`, { method: 'POST' });
      const report = (await verified.body.json()) as { bad: unknown[] };
      assert.equal(report.bad.length, 1, 'verify found the rotten file');
      // The serving processes hear of the removal over IPC: within moments no process sends it.
      await waitFor('the blob fetched anew with the right bytes', async () => {
        const r = await get(url);
        return r.status === 200 && sha256(r.body) === layer.digest && r.headers['x-cache'] === 'MISS';
      });
      assert.equal(fwd.count({ method: 'GET', pathIncludes: layer.digest }) - fetched, 1, 'fetched upstream once more');
      for (let i = 0; i < 6; i++) {
        const r = await get(url);
        assert.equal(sha256(r.body), layer.digest);
        assert.equal(r.headers['x-cache'], 'HIT');
      }
    } finally {
      await g.kill('SIGTERM');
    }
  });

  test('a cached file truncated under Gantry is cut or a 503, never a loop between the processes; verify finds it and it is fetched anew', async () => {
    const { g, cacheDir } = await start('truncated');
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
      await get(url);
      for (let i = 0; i < 4; i++) assert.equal((await get(url)).headers['x-cache'], 'HIT');
      const hex = layer.digest.slice('sha256:'.length);
      await truncate(join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex), 1000);
      // Each answer ends at once: a cut body (the descriptor still open knows the old size), a 503,
      // or the right bytes; never a short body accepted as whole, never a request bounced for good.
      for (let i = 0; i < 4; i++) {
        const r = await getOnNewConnection(url).catch((err: Error) => err);
        if (r instanceof Error) continue;
        assert.ok(r.status === 503 || (r.status === 200 && sha256(r.body) === layer.digest), `status ${r.status}, ${r.body.length} bytes`);
      }
      // Verify reads through the descriptor Gantry keeps open, which still knows the old size: it must call that bad, not fail.
      const verified = await request(`${g.url}/admin/verify?remove=true`, { method: 'POST' });
      assert.equal(verified.statusCode, 200);
      assert.equal(((await verified.body.json()) as { removed: number }).removed, 1);
      const fresh = await waitFor('the blob served right again', async () => {
        const r = await getOnNewConnection(url).catch(() => undefined);
        return r?.status === 200 && sha256(r.body) === layer.digest ? r : undefined;
      });
      assert.equal(fresh.status, 200);
    } finally {
      await g.kill('SIGTERM');
    }
  });

  test('a serving process that dies is started again; requests are answered meanwhile', async () => {
    const { g, logFile } = await start('respawn');
    try {
      const url = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
      await get(url);
      const [victim] = await childPids(g.pid);
      assert.ok(victim !== undefined);
      process.kill(victim, 'SIGKILL');
      // Connections it held or had queued die with it (reset); once it is gone, new ones land on a live process.
      await waitFor('the killed process gone', () => !alive(victim));
      for (let i = 0; i < 10; i++) {
        const r = await getOnNewConnection(url);
        assert.equal(r.status, 200);
        assert.equal(sha256(r.body), layer.digest);
      }
      const now = await waitFor('a new serving process', async () => {
        const pids = await childPids(g.pid);
        return pids.length === WORKERS && !pids.includes(victim) ? pids : undefined;
      });
      assert.equal(now.length, WORKERS);
      assert.ok((await logLines(logFile)).some((l) => l['msg'] === 'serving process exited; starting it again'));
    } finally {
      await g.kill('SIGTERM');
    }
  });

  test('kill -9 of the main process takes its serving processes down and frees the port; a new Gantry serves the same cache', async () => {
    const { g, cacheDir } = await start('kill9');
    const url = `${g.url}/v2/${REPO}/blobs/${layer.digest}`;
    await get(url);
    const workers = await childPids(g.pid);
    assert.equal(workers.length, WORKERS);
    try {
      await g.kill('SIGKILL');
      await waitFor('serving processes gone', () => workers.every((pid) => !alive(pid)));
      const port = Number(new URL(g.url).port);
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(true));
      });
      assert.ok(refused, 'nothing listens on the port any more');
    } finally {
      for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    const again = await startGantryProcess({ GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url, GANTRY_WORKERS: String(WORKERS) });
    try {
      const fetched = fwd.count({ method: 'GET', pathIncludes: layer.digest });
      const r = await get(`${again.url}/v2/${REPO}/blobs/${layer.digest}`);
      assert.equal(r.headers['x-cache'], 'HIT');
      assert.equal(sha256(r.body), layer.digest);
      assert.equal(fwd.count({ method: 'GET', pathIncludes: layer.digest }), fetched);
    } finally {
      await again.kill('SIGTERM');
    }
  });

  test('SIGTERM stops every process; a port already taken is a clear error', async () => {
    const { g } = await start('sigterm');
    const workers = await childPids(g.pid);
    assert.equal(workers.length, WORKERS);
    await g.kill('SIGTERM');
    await waitFor('serving processes gone', () => workers.every((pid) => !alive(pid)));

    const taken = await new Promise<Server>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => resolve(srv));
    });
    try {
      const port = (taken.address() as AddressInfo).port;
      const r = await runGantry(['serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', join(tmp, 'taken'), '--workers', String(WORKERS)], 30_000);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, /EADDRINUSE|address already in use/i);
    } finally {
      taken.close();
    }
  });
});
