// Prefetch jobs across the nodes of a cluster (issue 14): a real Redis, a real Distribution
// registry behind a counting, throttling forwarder, nodes in this process and as processes (which
// can be killed -9). Any node answers for any node's job; a node killed mid-job has it adopted and
// finished by exactly one other node; with Redis down, prefetch works on each node alone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildImage, pushImage, randomBlob, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { getFreePort } from '../helpers/free-port.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { api, finished, jobOf, submit, type Job } from '../helpers/prefetch-api.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const PEER_TOKEN = 'test-peer-secret-0123456789';
const small = buildImage({ format: 'docker', seed: 'cluster-prefetch-small' });
/** Two 3 MiB layers: behind a 1 MiB/s forwarder, about 6 s to fetch, long enough to watch and to kill. */
const big = buildImage({ format: 'oci', seed: 'cluster-prefetch-big', layers: [gzipSync(randomBlob(3 << 20, 'cpf-1').bytes, { level: 0 }), gzipSync(randomBlob(3 << 20, 'cpf-2').bytes, { level: 0 })] });

let redis: RedisServer;
let registry: UpstreamRegistry;
let fwd: CountingForwarder;
let tmp: string;
const nodes = new Set<Mirror>();
const processes = new Set<GantryProcess>();

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-cluster-prefetch-'));
  [redis, registry] = await Promise.all([startRedisServer(), startUpstreamRegistry({ storage: 'inmemory' })]);
  fwd = await startCountingForwarder({ target: registry.url, bytesPerSecond: 1 << 20 });
  await pushImage(registry.url, 'fx/small', 'v1', small);
  await pushImage(registry.url, 'fx/big', 'v1', big);
});

after(async () => {
  for (const n of nodes) await n.destroy().catch(() => undefined);
  for (const p of processes) await p.kill('SIGKILL').catch(() => undefined);
  await fwd?.stop();
  await registry?.stop();
  await redis?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A node in this process, on a port chosen first: its advertised URL names it. */
async function startNode(name: string): Promise<Mirror> {
  for (let attempt = 0; ; attempt++) {
    const port = await getFreePort();
    try {
      const node = await startMirror({
        listen: `127.0.0.1:${port}`,
        upstreams: [{ host: 'docker.io', url: fwd.url }],
        cluster: { nodeId: name, advertiseUrl: `http://127.0.0.1:${port}`, peerToken: PEER_TOKEN, redis: { url: redis.url } },
      });
      nodes.add(node);
      return node;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 3) throw err;
    }
  }
}

async function stopNode(node: Mirror): Promise<void> {
  await node.destroy();
  nodes.delete(node);
}

/** A node as its own process (bin/gantry), with its cache in `cacheDir`: it can be killed -9 and started again. */
async function startNodeProcess(name: string, cacheDir: string): Promise<GantryProcess> {
  const proc = await startGantryProcess((port) => ({
    GANTRY_UPSTREAM_URL: fwd.url, GANTRY_WORKERS: '0', GANTRY_CACHE_DIR: cacheDir,
    GANTRY_NODE_ID: name, GANTRY_ADVERTISE_URL: `http://127.0.0.1:${port}`, GANTRY_PEER_TOKEN: PEER_TOKEN, GANTRY_REDIS_URL: redis.url,
  }));
  processes.add(proc);
  return proc;
}

async function stopProcess(proc: GantryProcess, signal: NodeJS.Signals): Promise<void> {
  await proc.kill(signal);
  processes.delete(proc);
}

async function listOf(node: { url: string }): Promise<Job[]> {
  const r = await api(`${node.url}/admin/prefetch`, 'GET');
  assert.equal(r.status, 200);
  return (r.json as { jobs: Job[] }).jobs;
}

/** Part-way: the image running, some but not all of its bytes in. */
function partWay(job: Job, i: number): boolean {
  const image = job.images[i];
  return image !== undefined && image.state === 'running' && image.bytesDone > 0 && image.bytesDone < image.bytes;
}

function blobGets(image: BuiltImage): number[] {
  return image.blobs.map((b) => fwd.count({ method: 'GET', pathIncludes: `/blobs/${b.digest}` }));
}

describe('prefetch jobs in a cluster', () => {
  test('a job submitted on node A is followed from node B: its progress while it runs, then its end, run by "a"; each node lists both nodes\' jobs, newest first', async () => {
    const [a, b] = [await startNode('a'), await startNode('b')];
    try {
      const job = await submit(a, { images: ['fx/big:v1'] });
      assert.equal(job.node, 'a');
      const seen = await waitFor('node b to show the job part-way', async () => {
        const j = await jobOf(b, job.id);
        return partWay(j, 0) && j;
      }, { timeoutMs: 20_000, intervalMs: 100 });
      assert.equal(seen.node, 'a');
      assert.equal(seen.state, 'running');
      const done = await finished(b, job.id);
      assert.equal(done.state, 'done', JSON.stringify(done));
      assert.equal(done.node, 'a');
      assert.equal(done.images[0]?.digest, big.manifestDigest);
      assert.equal(done.images[0]?.blobsDone, big.blobs.length);
      assert.equal(done.images[0]?.bytesDone, done.images[0]?.bytes);

      const onB = await submit(b, { images: ['fx/small:v1'] });
      await finished(a, onB.id);
      for (const n of [a, b]) {
        const listed = (await listOf(n)).filter((j) => j.id === job.id || j.id === onB.id);
        assert.deepEqual(listed.map((j) => [j.id, j.node, j.state]), [[onB.id, 'b', 'done'], [job.id, 'a', 'done']]);
      }
      assert.equal((await api(`${b.url}/admin/prefetch/nope`, 'GET')).status, 404);
    } finally {
      await stopNode(a);
      await stopNode(b);
    }
  });

  test('a node killed -9 mid-job: exactly one other node adopts the job and finishes it; blobs fetched at most twice, images done not again; the node back does not run it', { timeout: 120_000 }, async () => {
    const cacheA = join(tmp, 'node-ka');
    let a = await startNodeProcess('ka', cacheA);
    const [b, c] = [await startNode('kb'), await startNode('kc')];
    try {
      fwd.reset();
      const job = await submit(a, { images: ['fx/small:v1', 'fx/big:v1'] });
      await waitFor('the big image to be part-way on node ka', async () => partWay(await jobOf(a, job.id), 1), { timeoutMs: 20_000, intervalMs: 50 });
      await stopProcess(a, 'SIGKILL');
      const atKill = blobGets(big);
      assert.deepEqual(blobGets(small), small.blobs.map(() => 1), 'node ka fetched the small image');
      assert.ok(atKill.every((n) => n <= 1), `node ka fetched each blob of the big image at most once: ${atKill.join(', ')}`);

      // Its heartbeat lapses within 15 s; an idle node's scan (every 5 s) then adopts the job.
      const done = await finished(c, job.id, 60_000);
      assert.equal(done.state, 'done', JSON.stringify(done));
      assert.ok(done.node === 'kb' || done.node === 'kc', `adopted by a live node, not ${done.node}`);
      const adopter = done.node === 'kb' ? b : c;
      const other = done.node === 'kb' ? c : b;
      assert.deepEqual(done.images.map((i) => [i.ref, i.state, i.digest]), [
        ['docker.io/fx/small:v1', 'done', small.manifestDigest],
        ['docker.io/fx/big:v1', 'done', big.manifestDigest],
      ]);
      assert.deepEqual(await jobOf(b, job.id), done, 'the same from every node');

      // Each blob of the image cut off: at most once on ka (perhaps partly), then once on the adopter.
      assert.deepEqual(blobGets(big), atKill.map((n) => n + 1), `upstream GETs per blob of the big image, ${atKill.join(', ')} of them on ka`);
      assert.deepEqual(blobGets(small), small.blobs.map(() => 1), 'the small image, done on ka, was not fetched again');
      assert.equal(await metricValue(adopter.url, 'gantry_prefetch_images_total', { outcome: 'done' }), 1, 'the adopter ran the image left');
      assert.equal(await metricValue(other.url, 'gantry_prefetch_images_total'), 0, 'the other node ran nothing');

      // Node ka back with its disk: it loads the job as unfinished, sees it adopted, and leaves it.
      const getsBefore = fwd.count({ method: 'GET' });
      a = await startNodeProcess('ka', cacheA);
      assert.equal(await metricValue(a.url, 'gantry_prefetch_queued_jobs'), 0, 'not resumed on ka');
      const onA = await jobOf(a, job.id);
      assert.equal(onA.state, 'done');
      assert.equal(onA.node, done.node);
      assert.equal(fwd.count({ method: 'GET' }), getsBefore, 'ka fetched nothing');
    } finally {
      await stopProcess(a, 'SIGTERM').catch(() => undefined);
      await stopNode(b);
      await stopNode(c);
    }
  });

  test('Redis down: a prefetch submitted to a node runs there alone and is followed there; with Redis back, the next job is seen from another node', async () => {
    const [a, b] = [await startNode('ra'), await startNode('rb')];
    try {
      await redis.halt();
      try {
        await waitFor('node ra to see Redis gone', async () => (await metricValue(a.url, 'gantry_redis_up')) === 0, { timeoutMs: 10_000, intervalMs: 50 });
        const job = await submit(a, { images: ['fx/small:v1'] });
        const done = await finished(a, job.id);
        assert.equal(done.state, 'done', JSON.stringify(done));
        assert.equal(done.node, 'ra');
        assert.ok((await listOf(a)).some((j) => j.id === job.id));
        assert.equal((await api(`${b.url}/admin/prefetch/${job.id}`, 'GET')).status, 404, 'node rb cannot know of it without Redis');
      } finally {
        await redis.resume();
      }
      await waitFor('both nodes to rejoin', async () => (await metricValue(a.url, 'gantry_redis_up')) === 1 && (await metricValue(b.url, 'gantry_redis_up')) === 1, { timeoutMs: 15_000, intervalMs: 100 });
      const next = await submit(a, { images: ['fx/small:v1'] });
      const seen = await finished(b, next.id);
      assert.equal(seen.state, 'done');
      assert.equal(seen.node, 'ra');
    } finally {
      await stopNode(a);
      await stopNode(b);
    }
  });
});
