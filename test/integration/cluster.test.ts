// Several Gantry nodes, one cache (issue 14): three nodes in this process with their own disks, a
// real Redis for their leases, a real S3-compatible store (Swift s3api) for the shared tier, and a
// real Distribution registry behind a counting, throttling forwarder as the upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { buildImage, makeLayer, MANIFEST_ACCEPT, pushBlob, pushImage, randomBlob, type Blob } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { getFreePort } from '../helpers/free-port.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { s3ClientFor, startS3Server, type S3Server } from '../helpers/s3-server.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const MiB = 1024 * 1024;
const PEER_TOKEN = 'test-peer-secret-0123456789';
const savedEnv = { ...process.env };

let s3: S3Server;
let redis: RedisServer;
let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let privateOrigin: UpstreamRegistry;
let privFwd: CountingForwarder;
let tmp: string;
const ALICE = { username: 'alice', password: 'alice-pw' };
const aliceBasic = `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`;
const nodes: Mirror[] = [];
const processes: GantryProcess[] = [];
/** The upstream sends this one without a Content-Length (chunked), as some CDNs do. */
const unsized = randomBlob(20 * MiB, 'cluster-unsized');

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-cluster-'));
  [s3, redis, origin, privateOrigin] = await Promise.all([startS3Server(), startRedisServer(), startUpstreamRegistry({ storage: 'filesystem' }), startUpstreamRegistry({ storage: 'filesystem', htpasswd: ALICE })]);
  const client = s3ClientFor(s3);
  await client.send(new CreateBucketCommand({ Bucket: 'cluster' }));
  client.destroy();
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region });
  // 25 MB/s: the issue's uplink, so a 100 MiB fill takes ~4 s and every follower joins mid-fill.
  fwd = await startCountingForwarder({ target: origin.url, bytesPerSecond: 25_000_000, withoutLength: (r) => r.method === 'GET' && r.path.includes(unsized.digest) });
  privFwd = await startCountingForwarder({ target: privateOrigin.url, bytesPerSecond: 25_000_000 });
});

after(async () => {
  for (const n of nodes) await n.destroy().catch(() => undefined);
  for (const p of processes) await p.kill('SIGKILL').catch(() => undefined);
  await fwd?.stop();
  await privFwd?.stop();
  await origin?.stop();
  await privateOrigin?.stop();
  await redis?.stop();
  await s3?.stop();
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) if (savedEnv[k] === undefined) delete process.env[k];
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A node on a port chosen first, since the other nodes reach it at its advertised URL. */
async function startNode(name: string, opts: { s3?: boolean; s3Extra?: Record<string, unknown> } = {}): Promise<Mirror> {
  for (let attempt = 0; ; attempt++) {
    const port = await getFreePort();
    try {
      const node = await startMirror({
        listen: `127.0.0.1:${port}`,
        upstreams: [{ host: 'docker.io', url: fwd.url }, { host: 'private.internal:5000', url: privFwd.url, prefix: 'private' }],
        cluster: { nodeId: name, advertiseUrl: `http://127.0.0.1:${port}`, peerToken: PEER_TOKEN, redis: { url: redis.url } },
        ...(opts.s3 === false ? {} : { storage: { s3: { endpoint: s3.endpoint, region: s3.region, bucket: 'cluster', forcePathStyle: true, ...opts.s3Extra } } }),
      });
      nodes.push(node);
      return node;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 3) throw err;
    }
  }
}

/** A node as its own process (bin/gantry), as operators run them: it can be killed -9. */
async function startNodeProcess(name: string, env: Record<string, string> = {}): Promise<GantryProcess> {
  const proc = await startGantryProcess((port) => ({
    AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region,
    GANTRY_UPSTREAM_URL: fwd.url, GANTRY_WORKERS: '0', GANTRY_CACHE_DIR: join(tmp, `${name}-${port}`),
    GANTRY_NODE_ID: name, GANTRY_ADVERTISE_URL: `http://127.0.0.1:${port}`, GANTRY_PEER_TOKEN: PEER_TOKEN, GANTRY_REDIS_URL: redis.url,
    GANTRY_S3_ENDPOINT: s3.endpoint, GANTRY_S3_REGION: s3.region, GANTRY_S3_BUCKET: 'cluster', GANTRY_S3_FORCE_PATH_STYLE: 'true',
    ...env,
  }));
  processes.push(proc);
  return proc;
}

type Pull = { node: string; status: number; digestOk: boolean; bytes: number; firstByteAt: number; endAt: number };

/** One client's GET of a blob: status, sha256 of the body, when its first byte and its end came. */
async function pull(node: { url: string }, name: string, blob: Blob): Promise<Pull> {
  const res = await request(`${node.url}/v2/team/app/blobs/${blob.digest}`, { headersTimeout: 60_000, bodyTimeout: 60_000 });
  const h = createHash('sha256');
  let bytes = 0;
  let firstByteAt = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    firstByteAt ||= performance.now();
    h.update(chunk);
    bytes += chunk.length;
  }
  return { node: name, status: res.statusCode, digestOk: `sha256:${h.digest('hex')}` === blob.digest, bytes, firstByteAt, endAt: performance.now() };
}

describe('one fill per cluster', () => {
  test('3 nodes x 20 clients on one cold 100 MiB blob: one upstream GET, 60 bodies that hash right, every first byte before the fill completes', async () => {
    // Three processes; node b with two serving processes, which tail what its main process streams from node a.
    const [a, b, c] = await Promise.all([startNodeProcess('a'), startNodeProcess('b', { GANTRY_WORKERS: '2' }), startNodeProcess('c')]);
    const blob = randomBlob(100 * MiB, 'cluster-100');
    await pushBlob(origin.url, 'team/app', blob);
    const byName = { a, b, c };
    // Node a starts the download; the others' clients arrive while it runs.
    const first = pull(a, 'a', blob);
    await waitFor('the download to start', () => fwd.count({ method: 'GET', pathIncludes: blob.digest }) === 1, { timeoutMs: 10_000 });
    // When the upstream finished sending: the fill completes only after that.
    const upstreamDone = waitFor('the upstream body to end', () => fwd.requests.find((r) => r.method === 'GET' && r.path.includes(blob.digest))?.done && performance.now(), { timeoutMs: 60_000, intervalMs: 10 });
    const rest = (['a', 'b', 'c'] as const).flatMap((name) => Array.from({ length: name === 'a' ? 19 : 20 }, () => pull(byName[name], name, blob)));
    const pulls = await Promise.all([first, ...rest]);
    const fillEnd = await upstreamDone;
    for (const p of pulls) {
      assert.equal(p.status, 200, `node ${p.node}`);
      assert.equal(p.bytes, blob.bytes.length, `node ${p.node}: whole body`);
      assert.ok(p.digestOk, `node ${p.node}: body hashes to the digest`);
      assert.ok(p.firstByteAt < fillEnd, `node ${p.node}: first byte before the download completed`);
    }
    assert.equal(fwd.count({ method: 'GET', pathIncludes: blob.digest }), 1, 'one upstream GET for the whole cluster');
    assert.equal(await metricValue(a.url, 'gantry_fill_leases_total', { result: 'taken' }), 1);
    assert.equal(await metricValue(b.url, 'gantry_node_info', { node: 'b' }), 1);
    for (const n of [b, c]) {
      assert.equal(await metricValue(n.url, 'gantry_fill_leases_total', { result: 'peer' }), 1);
      assert.equal(await metricValue(n.url, 'gantry_peer_bytes_total', { direction: 'received' }), blob.bytes.length);
    }
    assert.equal(await metricValue(a.url, 'gantry_peer_bytes_total', { direction: 'sent' }), 2 * blob.bytes.length);
  });

  test('a blob the upstream sends without a Content-Length: still one upstream GET for the cluster, streamed to the other node as it arrives', async () => {
    const [a, b] = [await startNode('ua', { s3: false }), await startNode('ub', { s3: false })];
    await pushBlob(origin.url, 'team/app', unsized);
    const first = pull(a, 'ua', unsized);
    await waitFor('the download to start', () => fwd.count({ method: 'GET', pathIncludes: unsized.digest }) === 1, { timeoutMs: 10_000 });
    const upstreamDone = waitFor('the upstream body to end', () => fwd.requests.find((r) => r.method === 'GET' && r.path.includes(unsized.digest))?.done && performance.now(), { timeoutMs: 60_000, intervalMs: 10 });
    const rest = [pull(a, 'ua', unsized), ...Array.from({ length: 3 }, () => pull(b, 'ub', unsized))];
    const pulls = await Promise.all([first, ...rest]);
    const fillEnd = await upstreamDone;
    for (const p of pulls) {
      assert.deepEqual([p.status, p.bytes, p.digestOk], [200, unsized.bytes.length, true], `node ${p.node}`);
      assert.ok(p.firstByteAt < fillEnd, `node ${p.node}: first byte before the download completed`);
    }
    assert.equal(fwd.count({ method: 'GET', pathIncludes: unsized.digest }), 1, 'one upstream GET for the whole cluster');
    assert.equal(await metricValue(b.url, 'gantry_fill_leases_total', { result: 'peer' }), 1);
    assert.equal(await metricValue(b.url, 'gantry_peer_bytes_total', { direction: 'received' }), unsized.bytes.length);
  });

  test('the peer endpoint serves nobody without the peer secret', async () => {
    const node = await startNode('d');
    const digest = `sha256:${'a'.repeat(64)}`;
    for (const authorization of [undefined, 'Bearer wrong-secret-of-some-length', `Basic ${Buffer.from(`x:${PEER_TOKEN}`).toString('base64')}`]) {
      const res = await request(`${node.url}/_gantry/peer/blobs/${digest}`, { headers: authorization ? { authorization } : {} });
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      assert.equal(res.statusCode, 401);
      assert.equal(body.errors[0]?.code, 'UNAUTHORIZED');
    }
    const bad = await request(`${node.url}/_gantry/peer/blobs/not-a-digest`, { headers: { authorization: `Bearer ${PEER_TOKEN}` } });
    assert.equal(bad.statusCode, 400);
    await bad.body.dump();
    const unknown = await request(`${node.url}/_gantry/peer/blobs/${digest}`, { headers: { authorization: `Bearer ${PEER_TOKEN}` } });
    assert.equal(unknown.statusCode, 404, 'never starts a download for a peer');
    await unknown.body.dump();
    assert.equal(fwd.count({ pathIncludes: digest }), 0);
  });

  test('a peer that sends wrong bytes is caught like an upstream: the client is cut, nothing is kept here or in S3, the next pull is right', async () => {
    const node = await startNode('v', { s3Extra: { prefix: 'liar/' } });
    const blob = randomBlob(2 * MiB, 'cluster-liar');
    await pushBlob(origin.url, 'team/app', blob);
    // A "node" that holds the lease on the blob and answers its peer endpoint with other bytes of the same length.
    const liar = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.bytes.length });
      res.end(randomBlob(blob.bytes.length, 'cluster-liar-wrong').bytes);
    });
    const liarPort = await new Promise<number>((ok) => liar.listen(0, '127.0.0.1', () => ok((liar.address() as AddressInfo).port)));
    const redisClient = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    const lease = `gantry:fill:${blob.digest}`;
    try {
      await redisClient.set(lease, JSON.stringify({ node: 'liar', url: `http://127.0.0.1:${liarPort}`, restricted: false }), 'PX', 30_000);
      const cut = await pull(node, 'v', blob).catch((err: unknown) => err as Error);
      assert.ok(cut instanceof Error || cut.bytes < blob.bytes.length, 'the client never gets a whole body of wrong bytes');
      assert.equal(fwd.count({ method: 'GET', pathIncludes: blob.digest }), 0, 'the peer answered: nothing went upstream');
      await waitFor('the failed fill counted', async () => (await metricValue(node.url, 'gantry_fills_total', { outcome: 'digest_mismatch' })) >= 1, { timeoutMs: 5_000, intervalMs: 50 });
      const client = s3ClientFor(s3);
      const inS3 = await client.send(new HeadObjectCommand({ Bucket: 'cluster', Key: `liar/blobs/${blob.digest.replace(':', '/')}` })).then(() => true, () => false);
      client.destroy();
      assert.equal(inS3, false, 'no object under the content key');
      await redisClient.del(lease);
      const right = await pull(node, 'v', blob);
      assert.deepEqual([right.status, right.digestOk], [200, true]);
      assert.equal(fwd.count({ method: 'GET', pathIncludes: blob.digest }), 1, 'fetched from the upstream, since nothing wrong was kept');
    } finally {
      redisClient.disconnect();
      liar.closeAllConnections();
      liar.close();
    }
  });

  test('Redis stopped: every node keeps serving alone and says so; once it is back, fills are shared again', async () => {
    const [a, b] = [await startNode('ra', { s3: false }), await startNode('rb', { s3: false })];
    const during = randomBlob(4 * MiB, 'cluster-redis-down');
    const afterwards = randomBlob(20 * MiB, 'cluster-redis-back');
    for (const bl of [during, afterwards]) await pushBlob(origin.url, 'team/app', bl);
    await redis.halt();
    try {
      await waitFor('both nodes to see Redis gone', async () => (await metricValue(a.url, 'gantry_redis_up')) === 0 && (await metricValue(b.url, 'gantry_redis_up')) === 0, { timeoutMs: 10_000, intervalMs: 50 });
      const ready = await request(`${a.url}/readyz`);
      assert.equal(ready.statusCode, 200, 'still ready: it works alone');
      assert.match(await ready.body.text(), /redis: down/);
      for (const [n, name] of [[a, 'ra'], [b, 'rb']] as const) {
        const p = await pull(n, name, during);
        assert.equal(p.status, 200);
        assert.ok(p.digestOk);
      }
      assert.equal(fwd.count({ method: 'GET', pathIncludes: during.digest }), 2, 'alone, each node fetched it itself');
    } finally {
      await redis.resume();
    }
    await waitFor('both nodes to rejoin', async () => (await metricValue(a.url, 'gantry_redis_up')) === 1 && (await metricValue(b.url, 'gantry_redis_up')) === 1, { timeoutMs: 15_000, intervalMs: 100 });
    const first = pull(a, 'ra', afterwards);
    await waitFor('the download to start', () => fwd.count({ method: 'GET', pathIncludes: afterwards.digest }) === 1, { timeoutMs: 10_000 });
    const [pa, pb] = await Promise.all([first, pull(b, 'rb', afterwards)]);
    assert.ok(pa.digestOk && pb.digestOk);
    assert.equal(fwd.count({ method: 'GET', pathIncludes: afterwards.digest }), 1, 'shared again: one upstream GET');
    assert.match(await (await request(`${a.url}/readyz`)).body.text(), /redis: up/);
  });

  test('the filling node killed (-9) at 30%: the other nodes\' clients end with the right bytes, one node resumes with Range, nothing partial in S3', async () => {
    const [ka, kb, kc] = await Promise.all([startNodeProcess('ka'), startNodeProcess('kb'), startNodeProcess('kc')]);
    const blob = randomBlob(100 * MiB, 'cluster-kill');
    await pushBlob(origin.url, 'team/app', blob);
    const pullFrom = async (url: string, name: string): Promise<Pull | { node: string; error: string }> => {
      try {
        return await pull({ url }, name, blob);
      } catch (err) {
        return { node: name, error: (err as Error).message };
      }
    };
    const onA = pullFrom(ka.url, 'ka');
    await waitFor('node ka to download', () => fwd.count({ method: 'GET', pathIncludes: blob.digest }) === 1, { timeoutMs: 10_000 });
    const followers = [...Array.from({ length: 3 }, () => pullFrom(kb.url, 'kb')), ...Array.from({ length: 3 }, () => pullFrom(kc.url, 'kc'))];
    const download = fwd.requests.find((r) => r.method === 'GET' && r.path.includes(blob.digest));
    await waitFor('30% of the blob upstream', () => (download?.bytes ?? 0) >= 0.3 * blob.bytes.length, { timeoutMs: 30_000, intervalMs: 10 });
    await ka.kill('SIGKILL');
    const results = await Promise.all(followers);
    await onA;
    for (const r of results) {
      // Right bytes, or a clean cut (an error), never a wrong or short body served as complete.
      if ('error' in r) continue;
      assert.equal(r.status, 200, `node ${r.node}`);
      assert.equal(r.bytes, blob.bytes.length, `node ${r.node}: a complete body`);
      assert.ok(r.digestOk, `node ${r.node}: the right bytes`);
    }
    assert.ok(results.filter((r) => !('error' in r)).length === 6, `every follower finishes: ${JSON.stringify(results.map((r) => ('error' in r ? r.error : 'ok')))}`);
    const gets = fwd.requests.filter((r) => r.method === 'GET' && r.path.includes(blob.digest));
    const ranged = gets.filter((r) => typeof r.headers['range'] === 'string');
    assert.ok(gets.length - ranged.length === 1 && ranged.length === 1, `one download and one Range resume upstream (${gets.length} GETs, ${ranged.length} with Range)`);
    const takenOver = (await metricValue(kb.url, 'gantry_fill_leases_total', { result: 'taken_over' })) + (await metricValue(kc.url, 'gantry_fill_leases_total', { result: 'taken_over' }));
    assert.equal(takenOver, 1, 'one node took the lease over');
    // A later pull is right, and S3 holds the complete object and no unfinished upload.
    const later = await pull(kb, 'kb', blob);
    assert.ok(later.digestOk);
    const client = s3ClientFor(s3);
    try {
      await waitFor('the object in S3', async () => {
        try {
          const head = await client.send(new HeadObjectCommand({ Bucket: 'cluster', Key: `blobs/${blob.digest.replace(':', '/')}` }));
          return head.ContentLength === blob.bytes.length;
        } catch {
          return false;
        }
      }, { timeoutMs: 20_000, intervalMs: 200 });
      await waitFor('no unfinished upload of it', async () => {
        const up = await client.send(new ListMultipartUploadsCommand({ Bucket: 'cluster', Prefix: `blobs/${blob.digest.replace(':', '/')}` }));
        return (up.Uploads ?? []).length === 0;
      }, { timeoutMs: 10_000, intervalMs: 200 });
    } finally {
      client.destroy();
    }
  });

  test('a token issued by node A works on node B; restricted content A is downloading is refused to anonymous clients on B and streamed to the credential on B', async () => {
    const [a, b] = [await startNode('ta', { s3: false }), await startNode('tb', { s3: false })];
    const secret = randomBlob(50 * MiB, 'cluster-private');
    await pushBlob(privateOrigin.url, 'private/app', secret, ALICE);
    const tokenRes = await request(`${a.url}/token?service=private.internal:5000&scope=${encodeURIComponent('repository:private/private/app:pull')}`, { headers: { authorization: aliceBasic } });
    assert.equal(tokenRes.statusCode, 200);
    const { token } = (await tokenRes.body.json()) as { token: string };
    const path = `/v2/private/private/app/blobs/${secret.digest}`;
    const get = async (node: Mirror, authorization?: string): Promise<{ status: number; body: Buffer }> => {
      const res = await request(`${node.url}${path}`, { headers: authorization ? { authorization } : {}, bodyTimeout: 60_000 });
      return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
    };
    const onA = get(a, `Bearer ${token}`);
    await waitFor('node ta to download', () => privFwd.count({ method: 'GET', pathIncludes: secret.digest }) === 1, { timeoutMs: 10_000 });
    const anonymous = await get(b);
    assert.equal(anonymous.status, 401, 'an anonymous client on another node is refused');
    const forged = await get(b, 'Bearer gantry.not-a-token-anyone-issued');
    assert.equal(forged.status, 401, 'an unknown token is refused');
    const viaB = await get(b, `Bearer ${token}`);
    assert.equal(viaB.status, 200, "node A's token accepted by node B");
    assert.ok(viaB.body.equals(secret.bytes));
    assert.ok((await onA).body.equals(secret.bytes));
    assert.equal(privFwd.count({ method: 'GET', pathIncludes: secret.digest }), 1, 'node B streamed it from node A');
    // Both of node B's requests found node A downloading it; the anonymous one was refused there.
    assert.equal(await metricValue(b.url, 'gantry_fill_leases_total', { result: 'peer' }), 2);
    assert.ok(privFwd.count({ method: 'HEAD', pathIncludes: secret.digest }) >= 2, "node B asked the upstream about each of its clients");
  });

  test('shared records: a tag fetched on node A is fresh on node B (no upstream tag request), and an access check made by one node is reused by another', async () => {
    const [a, b] = [await startNode('sa'), await startNode('sb')];
    const image = buildImage({ format: 'oci', seed: 'cluster-tag' });
    await pushImage(origin.url, 'team/tagged', 'v1', image);
    const tagPath = '/v2/team/tagged/manifests/v1';
    const getTag = async (node: Mirror): Promise<Buffer> => {
      const res = await request(`${node.url}${tagPath}`, { headers: { accept: MANIFEST_ACCEPT } });
      assert.equal(res.statusCode, 200);
      return Buffer.from(await res.body.arrayBuffer());
    };
    assert.ok((await getTag(a)).equals(image.manifest));
    const tagRequests = (): number => fwd.count({ pathIncludes: '/team/tagged/manifests/' });
    const afterA = tagRequests();
    await waitFor('the manifest in S3', async () => (await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'put', result: 'done' })) >= 1, { timeoutMs: 10_000, intervalMs: 50 });
    assert.ok((await getTag(b)).equals(image.manifest), 'byte-identical through node B');
    assert.equal(tagRequests(), afterA, 'node B used the tag record node A left, and the manifest from S3: no upstream request');

    // Access checks: restricted content in S3, checked once for alice on node B, remembered for node C.
    const secret = randomBlob(MiB, 'cluster-memo');
    // A repository no earlier test checked alice for (answers are kept per credential and repository).
    await pushBlob(privateOrigin.url, 'private/memo', secret, ALICE);
    const path = `/v2/private/private/memo/blobs/${secret.digest}`;
    const viaA = await request(`${a.url}${path}`, { headers: { authorization: aliceBasic } });
    assert.equal(viaA.statusCode, 200);
    await viaA.body.dump();
    await waitFor('the private blob in S3', async () => (await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'upload', result: 'done' })) >= 1, { timeoutMs: 10_000, intervalMs: 50 });
    const viaB = await request(`${b.url}${path}`, { headers: { authorization: aliceBasic } });
    assert.equal(viaB.statusCode, 200);
    await viaB.body.dump();
    const heads = privFwd.count({ method: 'HEAD', pathIncludes: secret.digest });
    assert.ok(heads >= 1, 'node B asked the upstream whether alice may read it');
    const c = await startNode('sc');
    const viaC = await request(`${c.url}${path}`, { headers: { authorization: aliceBasic } });
    assert.equal(viaC.statusCode, 200);
    await viaC.body.dump();
    assert.equal(privFwd.count({ method: 'HEAD', pathIncludes: secret.digest }), heads, "node C reused node B's answer");
    assert.equal(privFwd.count({ method: 'GET', pathIncludes: secret.digest }), 1, 'fetched upstream once, by node A');
    const anonymous = await request(`${c.url}${path}`);
    assert.equal(anonymous.statusCode, 401, "alice's answer is not anybody's");
    await anonymous.body.dump();
  });

  test('pins are the cluster\'s: one made on node A is listed on B, keeps its blobs in the shared tier past the budget, and a release on B releases it on A', async () => {
    const s3Extra = { prefix: 'pins/', maxBytes: '5MiB', sweepSeconds: 1 };
    const [a, b] = [await startNode('pa', { s3Extra }), await startNode('pb', { s3Extra })];
    // Random bytes do not compress: a 3 MiB tar member is a ~3 MiB layer.
    const image = buildImage({ format: 'oci', seed: 'cluster-pin', layers: [makeLayer({ data: randomBlob(3 * MiB, 'cluster-pin-layer').bytes })] });
    await pushImage(origin.url, 'team/pinned', 'v1', image);
    const layer = image.blobs.find((bl) => bl.bytes.length > 3 * MiB);
    assert.ok(layer);
    const admin = async (node: Mirror, method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> => {
      const res = await request(`${node.url}/admin${path}`, { method, body: body === undefined ? null : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      return { status: res.statusCode, json: await res.body.json() };
    };
    const pinnedRefs = async (node: Mirror): Promise<string[]> => ((await admin(node, 'GET', '/pins')).json as Array<{ ref: string }>).map((p) => p.ref);
    const client = s3ClientFor(s3);
    const inS3 = (digest: string): Promise<boolean> =>
      client.send(new HeadObjectCommand({ Bucket: 'cluster', Key: `pins/blobs/${digest.replace(':', '/')}` })).then(() => true, () => false);
    try {
      const job = (await admin(a, 'POST', '/prefetch', { images: ['team/pinned:v1'], pin: true })).json as { id: string };
      await waitFor('the pinned prefetch done on pa', async () => ((await admin(a, 'GET', `/prefetch/${job.id}`)).json as { state: string }).state === 'done', { timeoutMs: 20_000, intervalMs: 100 });
      await waitFor('the pinned layer uploaded', () => inS3(layer.digest), { timeoutMs: 10_000, intervalMs: 100 });
      await waitFor('the pin listed on pb', async () => (await pinnedRefs(b)).includes('docker.io/team/pinned:v1'), { timeoutMs: 10_000, intervalMs: 100 });
      // 3 MiB pinned + 2 x 2 MiB against 5 MiB: the pinned layer is the least recently used, and stays.
      const extra = [1, 2].map((i) => randomBlob(2 * MiB, `cluster-pin-extra-${i}`)) as [Blob, Blob];
      for (const bl of extra) {
        await pushBlob(origin.url, 'team/app', bl);
        assert.ok((await pull(b, 'pb', bl)).digestOk);
      }
      const evictions = async (): Promise<number> => (await metricValue(a.url, 'gantry_shared_tier_evictions_total')) + (await metricValue(b.url, 'gantry_shared_tier_evictions_total'));
      await waitFor('the tier back under its budget', async () => (await evictions()) >= 1 && !(await inS3(extra[0].digest)), { timeoutMs: 15_000, intervalMs: 100 });
      assert.ok(await inS3(layer.digest), 'the pinned layer, oldest of all, is still in the shared tier');
      const released = await admin(b, 'DELETE', `/pins?ref=${encodeURIComponent('docker.io/team/pinned:v1')}`);
      assert.equal(released.status, 200);
      await waitFor('the release reached pa', async () => (await pinnedRefs(a)).length === 0, { timeoutMs: 10_000, intervalMs: 100 });
    } finally {
      client.destroy();
    }
  });

  test('the shared tier keeps to its budget, least recently used first across nodes (recency in Redis)', async () => {
    const s3Extra = { prefix: 'lru/', maxBytes: '5MiB', sweepSeconds: 1 };
    const [a, b] = [await startNode('la', { s3Extra }), await startNode('lb', { s3Extra })];
    const [b1, b2, b3] = [1, 2, 3].map((i) => randomBlob(2 * MiB, `cluster-lru-${i}`)) as [Blob, Blob, Blob];
    for (const bl of [b1, b2, b3]) await pushBlob(origin.url, 'team/app', bl);
    const client = s3ClientFor(s3);
    const inS3 = async (bl: Blob): Promise<boolean> => {
      try {
        await client.send(new HeadObjectCommand({ Bucket: 'cluster', Key: `lru/blobs/${bl.digest.replace(':', '/')}` }));
        return true;
      } catch {
        return false;
      }
    };
    // On a timeout, say whether S3 failed meanwhile (an upload dropped on an error is by design).
    const why = async (err: unknown): Promise<never> => {
      const errors = await Promise.all([a, b].map((n) => metricValue(n.url, 'gantry_shared_tier_requests_total', { result: 'error' })));
      const state = await Promise.all([b1, b2, b3].map(inS3));
      const tier = await Promise.all([a, b].map(async (n) => `${await metricValue(n.url, 'gantry_shared_tier_bytes')}/${await metricValue(n.url, 'gantry_shared_tier_evictions_total')}`));
      throw new Error(`${(err as Error).message} (shared tier errors on la, lb: ${errors.join(', ')}; b1-b3 in S3: ${state.join(', ')}; bytes/evictions: ${tier.join(', ')})`);
    };
    try {
      // Node la has recorded each upload (its recency entry) before the next step: "stored before
      // read" is then an order the index sees, not a race between la's event loop and the test.
      const uploaded = async (n: number): Promise<void> =>
        waitFor(`${n} upload(s) recorded on la`, async () => (await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'upload', result: 'done' })) >= n, { timeoutMs: 10_000, intervalMs: 50 }).then(() => undefined, why);
      for (const [i, bl] of [b1, b2].entries()) {
        assert.ok((await pull(a, 'la', bl)).digestOk);
        await uploaded(i + 1);
        assert.ok(await inS3(bl));
      }
      // Node lb reads b1 from S3: b1 is now the most recently used of the two.
      assert.ok((await pull(b, 'lb', b1)).digestOk);
      assert.ok((await pull(a, 'la', b3)).digestOk);
      await uploaded(3);
      // 6 MiB against 5: one sweep (one node holds the lease) deletes the least recently used, b2.
      await waitFor('b2 evicted', async () => !(await inS3(b2)), { timeoutMs: 10_000, intervalMs: 100 }).catch(why);
      assert.ok(await inS3(b1), 'b1, read through another node since, stays');
      assert.ok(await inS3(b3));
      const evicted = (await metricValue(a.url, 'gantry_shared_tier_evictions_total')) + (await metricValue(b.url, 'gantry_shared_tier_evictions_total'));
      assert.equal(evicted, 1);
      await waitFor('the tier size reported', async () => (await metricValue(a.url, 'gantry_shared_tier_bytes')) + (await metricValue(b.url, 'gantry_shared_tier_bytes')) > 0, { timeoutMs: 5_000, intervalMs: 100 });
      // A blob evicted from S3 and from the node's disk is fetched again on the next miss.
      const c = await startNode('lc', { s3Extra });
      assert.ok((await pull(c, 'lc', b2)).digestOk);
    } finally {
      client.destroy();
    }
  });
});
