// Several Gantry nodes sharing an S3 tier (issue 14): a real S3-compatible server (OpenStack Swift
// with s3api), a real Distribution registry behind a counting forwarder, nodes in-process with
// their own cache directories. What reaches the upstream is counted; what reaches S3 is read back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { buildIndex, pushBlob, pushImage, randomBlob, sha256, type Blob } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { runGantry } from '../helpers/gantry-process.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { s3ClientFor, startS3Server, type S3Server } from '../helpers/s3-server.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const MiB = 1024 * 1024;
const BUCKET = 'gantry';
const PREFIX = 'cache/';
const ALICE = { username: 'alice', password: 'alice-pw' };
const aliceBasic = `Basic ${Buffer.from(`${ALICE.username}:${ALICE.password}`).toString('base64')}`;

let s3: S3Server;
let client: S3Client;
let origin: UpstreamRegistry;
let privateOrigin: UpstreamRegistry;
let fwd: CountingForwarder;
let privFwd: CountingForwarder;
let tmp: string;
const nodes: Mirror[] = [];
const savedEnv = { ...process.env };

/** Blobs of one part (a single PUT) and of three parts (a multipart upload of 5 MiB parts). */
const small = randomBlob(MiB + 1, 'shared-small');
const big = randomBlob(12 * MiB + 7, 'shared-big');
const secret = randomBlob(2 * MiB, 'shared-private');
const multi = buildIndex({ format: 'oci', seed: 'shared-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] });
const execFileP = promisify(execFile);
const skopeo = async (...args: string[]): Promise<string> => (await execFileP('skopeo', ['--insecure-policy', ...args], { timeout: 60_000, maxBuffer: 16 << 20 })).stdout;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-shared-'));
  s3 = await startS3Server();
  client = s3ClientFor(s3);
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  // In-process nodes find their S3 credentials the way the SDK does everywhere: the environment.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region });
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  privateOrigin = await startUpstreamRegistry({ storage: 'filesystem', htpasswd: ALICE });
  for (const b of [small, big]) await pushBlob(origin.url, 'team/app', b);
  await pushImage(origin.url, 'team/multi', 'v1', multi);
  await pushBlob(privateOrigin.url, 'private/app', secret, ALICE);
  fwd = await startCountingForwarder({ target: origin.url });
  privFwd = await startCountingForwarder({ target: privateOrigin.url });
});

after(async () => {
  for (const n of nodes) await n.destroy().catch(() => undefined);
  await fwd?.stop();
  await privFwd?.stop();
  await origin?.stop();
  await privateOrigin?.stop();
  client?.destroy();
  await s3?.stop();
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) if (savedEnv[k] === undefined) delete process.env[k];
  await rm(tmp, { recursive: true, force: true });
});

function s3Settings(bucket = BUCKET): Record<string, unknown> {
  return { endpoint: s3.endpoint, region: s3.region, bucket, prefix: PREFIX, forcePathStyle: true };
}

/** A node with its own empty cache directory, sharing the bucket. */
async function startNode(upstreamUrl = fwd.url, s3Extra: Record<string, unknown> = {}): Promise<Mirror> {
  const node = await startMirror({
    upstreams: [
      { host: 'docker.io', url: upstreamUrl },
      { host: 'private.internal:5000', url: privFwd.url, prefix: 'private' },
    ],
    storage: { s3: { ...s3Settings(), ...s3Extra } },
  });
  nodes.push(node);
  return node;
}

const keyOf = (digest: string): string => `${PREFIX}blobs/${digest.replace(':', '/')}`;

async function s3Has(digest: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: keyOf(digest) }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

async function get(node: Mirror, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> {
  const res = await request(`${node.url}${path}`, { headers });
  return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), headers: res.headers };
}

const blobGets = (f: CountingForwarder, b: Blob): number => f.count({ method: 'GET', pathIncludes: b.digest });

describe('a shared S3 tier', () => {
  test('a blob pulled through node A lands in S3 once verified; nodes B and C serve it from there, Range too, with no upstream GET', async () => {
    const a = await startNode();
    for (const b of [small, big]) {
      const got = await get(a, `/v2/team/app/blobs/${b.digest}`);
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), b.digest);
    }
    // Published after the local commit, in the background: bounded wait for S3 to show it.
    for (const b of [small, big]) await waitFor(`${b.digest} in S3`, () => s3Has(b.digest), { timeoutMs: 15_000, intervalMs: 100 });
    const stored = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: keyOf(big.digest) }));
    assert.equal(sha256(Buffer.from(await stored.Body!.transformToByteArray())), big.digest, 'S3 holds exactly the verified bytes');
    assert.equal(stored.Metadata?.['gantry-restricted'], '0');
    assert.equal(await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'upload', result: 'done' }), 2);

    const b = await startNode();
    for (const blob of [small, big]) {
      const got = await get(b, `/v2/team/app/blobs/${blob.digest}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(blob.bytes), 'byte-identical from node B');
      assert.equal(blobGets(fwd, blob), 1, 'the upstream saw one GET of it, from node A');
    }
    assert.equal(await metricValue(b.url, 'gantry_shared_tier_requests_total', { op: 'open', result: 'hit' }), 2);
    assert.equal(await metricValue(b.url, 'gantry_shared_tier_bytes_total', { direction: 'read' }), small.bytes.length + big.bytes.length);
    assert.equal(await metricValue(b.url, 'gantry_shared_tier_requests_total', { op: 'upload' }), 0, 'what came from S3 is not uploaded again');

    const c = await startNode();
    const ranged = await get(c, `/v2/team/app/blobs/${big.digest}`, { range: 'bytes=6000000-6000099' });
    assert.equal(ranged.status, 206);
    assert.ok(ranged.body.equals(big.bytes.subarray(6_000_000, 6_000_100)));
    // And the whole blob is then on node C's disk: a second read is a local hit.
    const whole = await get(c, `/v2/team/app/blobs/${big.digest}`);
    assert.ok(whole.body.equals(big.bytes));
    assert.equal(blobGets(fwd, big), 1);
  });

  test('skopeo copies an image through node A, then through node B with an empty disk: byte-identical, no blob or child manifest fetched upstream again', async () => {
    const a = await startNode();
    const b = await startNode();
    const copy = async (node: Mirror, name: string): Promise<Map<string, Buffer>> => {
      const dest = join(tmp, name);
      await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${node.url.replace('http://', '')}/team/multi:v1`, `dir:${dest}`);
      const files = new Map<string, Buffer>();
      for (const f of await readdir(dest)) files.set(f, await readFile(join(dest, f)));
      return files;
    };
    const viaA = await copy(a, 'multi-a');
    const children = [...new Map(multi.children.flatMap((c) => [{ digest: c.manifestDigest }, ...c.blobs]).map((c) => [c.digest, c])).values()];
    for (const c of children) await waitFor(`${c.digest} in S3`, () => s3Has(c.digest), { timeoutMs: 15_000, intervalMs: 100 });
    const before = new Map(children.map((c) => [c.digest, fwd.count({ method: 'GET', pathIncludes: c.digest })]));
    const viaB = await copy(b, 'multi-b');
    assert.deepEqual([...viaB.keys()].sort(), [...viaA.keys()].sort());
    for (const [name, bytes] of viaA) assert.ok(viaB.get(name)?.equals(bytes), `${name} byte-identical through node B`);
    for (const c of children) {
      assert.equal(before.get(c.digest), 1, `${c.digest} fetched upstream once, through node A`);
      assert.equal(fwd.count({ method: 'GET', pathIncludes: c.digest }), 1, `${c.digest}: no GET upstream through node B`);
    }
    assert.ok((await metricValue(b.url, 'gantry_shared_tier_requests_total', { op: 'open', result: 'hit' })) >= children.length);
  });

  test('bytes that do not match their digest never become an S3 object, and the multipart upload is discarded', async () => {
    const wanted = randomBlob(7 * MiB, 'shared-corrupt');
    const wrong = Buffer.from(wanted.bytes);
    wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 0xff;
    const liar = await startFakeUpstream((req, res) => {
      if (req.url === '/v2/') {
        res.writeHead(200).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(wrong.length), 'docker-content-digest': wanted.digest });
      res.end(wrong);
    });
    try {
      const node = await startNode(liar.url);
      const res = await request(`${node.url}/v2/team/app/blobs/${wanted.digest}`);
      const body = await res.body.arrayBuffer().then(Buffer.from, () => Buffer.alloc(0));
      assert.ok(res.statusCode >= 500 || body.length < wrong.length, 'the client never gets the whole wrong body');
      await waitFor('the aborted upload to be counted', async () => (await metricValue(node.url, 'gantry_shared_tier_requests_total', { op: 'upload', result: 'aborted' })) === 1, { timeoutMs: 10_000, intervalMs: 50 });
      assert.equal(await s3Has(wanted.digest), false, 'no object under the digest');
      const pending = await waitFor('S3 to drop the parts', async () => {
        const up = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: keyOf(wanted.digest) }));
        return (up.Uploads ?? []).length === 0 ? 'none' : false;
      }, { timeoutMs: 10_000, intervalMs: 100 });
      assert.equal(pending, 'none');
    } finally {
      await liar.stop();
    }
  });

  test('restricted content stays gated on every node: fetched with a credential through A, refused to anonymous clients on B, served to the credential on B after the access check', async () => {
    const a = await startNode();
    const path = `/v2/private/private/app/blobs/${secret.digest}`;
    const first = await get(a, path, { authorization: aliceBasic });
    assert.equal(first.status, 200);
    assert.ok(first.body.equals(secret.bytes));
    await waitFor('the private blob in S3', () => s3Has(secret.digest), { timeoutMs: 15_000, intervalMs: 100 });
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: keyOf(secret.digest) }));
    assert.equal(head.Metadata?.['gantry-restricted'], '1');

    const b = await startNode();
    const anonymous = await get(b, path);
    assert.equal(anonymous.status, 401, 'an anonymous client on another node is refused');
    assert.equal(anonymous.body.includes(secret.bytes.subarray(0, 64)), false);
    const wrongCreds = await get(b, path, { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` });
    assert.ok(wrongCreds.status === 401 || wrongCreds.status === 403, `bad credentials refused (${wrongCreds.status})`);
    const allowed = await get(b, path, { authorization: aliceBasic });
    assert.equal(allowed.status, 200);
    assert.ok(allowed.body.equals(secret.bytes));
    assert.equal(blobGets(privFwd, secret), 1, 'the bytes came from S3; the upstream was only asked whether alice may see them');
    assert.ok(privFwd.count({ method: 'HEAD', pathIncludes: secret.digest }) >= 1);
  });

  test('S3 down: every node keeps serving (from its disk and the upstream), says so in metrics, and uses S3 again once it is back', async () => {
    const a = await startNode();
    const during = randomBlob(MiB, 'shared-during-outage');
    const afterwards = randomBlob(MiB, 'shared-after-outage');
    for (const b of [during, afterwards]) await pushBlob(origin.url, 'team/app', b);
    await s3.halt();
    try {
      const got = await get(a, `/v2/team/app/blobs/${during.digest}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(during.bytes));
      assert.equal(await metricValue(a.url, 'gantry_shared_tier_up'), 0);
      const again = await get(a, `/v2/team/app/blobs/${during.digest}`);
      assert.equal(again.status, 200, 'a local hit needs no S3');
    } finally {
      await s3.resume();
    }
    // Skipped while down, the tier is probed and rejoins by itself, with no request needed.
    await waitFor('the tier to read as up', async () => (await metricValue(a.url, 'gantry_shared_tier_up')) === 1, { timeoutMs: 15_000, intervalMs: 100 });
    const got = await get(a, `/v2/team/app/blobs/${afterwards.digest}`);
    assert.ok(got.body.equals(afterwards.bytes));
    await waitFor('the next download in S3', () => s3Has(afterwards.digest), { timeoutMs: 15_000, intervalMs: 100 });
    assert.equal(await s3Has(during.digest), false, 'what was fetched while S3 was down stays on the node that fetched it');
    assert.ok((await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'open', result: 'error' })) + (await metricValue(a.url, 'gantry_shared_tier_requests_total', { op: 'upload', result: 'error' })) >= 1);
  });

  test('a bucket that does not exist stops the start with one line naming it, exit status 1', async () => {
    const config = join(tmp, 'no-bucket.yaml');
    await writeFile(config, JSON.stringify({ listen: '127.0.0.1:0', cacheDir: join(tmp, 'no-bucket-cache'), storage: { s3: s3Settings('no-such-bucket') } }));
    const run = await runGantry(['serve', '--config', config], 30_000);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /^gantry: storage\.s3: bucket no-such-bucket at http:\/\/127\.0\.0\.1:\d+ cannot be used: .*404/m);
    assert.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`);
  });

  test('without Redis, the budget deletes the oldest objects first, down to the low watermark', async () => {
    const node = await startNode(fwd.url, { prefix: 'budget/', maxBytes: '5MiB', sweepSeconds: 1 });
    const blobs = [1, 2, 3, 4].map((i) => randomBlob(2 * MiB, `shared-budget-${i}`));
    for (const b of blobs) await pushBlob(origin.url, 'team/app', b);
    const key = (b: Blob): string => `budget/blobs/${b.digest.replace(':', '/')}`;
    const has = async (b: Blob): Promise<boolean> => {
      try {
        await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key(b) }));
        return true;
      } catch {
        return false;
      }
    };
    for (const b of blobs) {
      assert.equal((await get(node, `/v2/team/app/blobs/${b.digest}`)).status, 200);
      await waitFor(`${b.digest} in S3`, async () => (await has(b)) || (await metricValue(node.url, 'gantry_shared_tier_evictions_total')) > 0, { timeoutMs: 15_000, intervalMs: 50 });
      // Distinct upload times, to the second at least on some stores.
      await new Promise((r) => setTimeout(r, 1100));
    }
    // 8 MiB against 5: the two oldest go (8 -> 4 MiB, under 90 % of 5).
    await waitFor('the budget kept', async () => (await metricValue(node.url, 'gantry_shared_tier_evictions_total')) >= 2, { timeoutMs: 15_000, intervalMs: 100 });
    assert.deepEqual(await Promise.all(blobs.map(has)), [false, false, true, true]);
    assert.equal(await metricValue(node.url, 'gantry_shared_tier_evicted_bytes_total'), 4 * MiB);
  });

  test('nothing but verified, complete objects under the prefix', async () => {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: PREFIX }));
    for (const o of listed.Contents ?? []) {
      const body = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: o.Key! }));
      const bytes = Buffer.from(await body.Body!.transformToByteArray());
      assert.equal(`sha256:${o.Key!.split('/').at(-1)}`, sha256(bytes), `${o.Key} holds the bytes of its digest`);
    }
    assert.ok((listed.Contents ?? []).length >= 4);
  });
});
