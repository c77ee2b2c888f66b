// Self-test of the S3 (Swift + s3api) and Redis fixtures, through the libraries the shared tier will
// use: if these pass, a failure in a shared-tier test is Gantry's, not the fixture's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Redis } from 'ioredis';
import { alive } from '../helpers/processes.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { s3ClientFor, startS3Server, type S3Server } from '../helpers/s3-server.ts';
import { waitFor } from '../helpers/wait-for.ts';

const MiB = 1 << 20;
const BUCKET = 'fixture-bucket';

let s3: S3Server | undefined;
let redis: RedisServer | undefined;
let client: S3Client;
/** Every PID either fixture ran: after() checks none is left. */
const seenPids = new Set<number>();

before(async () => {
  // Side by side: Swift's start is mostly Python imports, Redis's is milliseconds.
  const [s, r] = await Promise.allSettled([startS3Server(), startRedisServer()]);
  if (s.status === 'fulfilled') s3 = s.value;
  if (r.status === 'fulfilled') redis = r.value;
  if (s.status === 'rejected') throw s.reason;
  if (r.status === 'rejected') throw r.reason;
  const f = fixtures();
  for (const pid of [...f.s3.pids(), f.redis.pid()]) seenPids.add(pid);
  console.log(`started Swift+s3api in ${Math.round(f.s3.startMs)} ms (${f.s3.pids().length} processes), redis-server in ${Math.round(f.redis.startMs)} ms`);
  client = s3ClientFor(f.s3);
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
});

after(async () => {
  let cleanup: unknown;
  try {
    // DeleteBucket fails on a bucket with objects left in it: a test that did not clean up.
    if (s3) await client.send(new DeleteBucketCommand({ Bucket: BUCKET }));
  } catch (err) {
    cleanup = err;
  }
  client?.destroy();
  for (const pid of [...(s3?.pids() ?? []), redis?.pid() ?? 0]) seenPids.add(pid);
  seenPids.delete(0);
  await Promise.all([s3?.stop(), redis?.stop()]);
  assert.deepEqual([...seenPids].filter(alive), [], 'every fixture process is gone');
  if (cleanup !== undefined) throw cleanup;
});

function fixtures(): { s3: S3Server; redis: RedisServer } {
  assert.ok(s3 && redis, 'fixtures started');
  return { s3, redis };
}

/** `size` bytes of deterministic content, made of 64 KiB blocks (so a stream can yield them). */
function* blocks(seed: string, size: number): Generator<Buffer> {
  for (let i = 0, left = size; left > 0; i++, left -= 64 * 1024) {
    const block = Buffer.alloc(64 * 1024);
    for (let off = 0; off < block.length; off += 32) createHash('sha256').update(`${seed}/${i}/${off}`).digest().copy(block, off);
    yield left >= block.length ? block : block.subarray(0, left);
  }
}

async function bodyBytes(body: { transformToByteArray(): Promise<Uint8Array> } | undefined): Promise<Buffer> {
  assert.ok(body, 'a response body');
  return Buffer.from(await body.transformToByteArray());
}

/** The SDK's service error name and HTTP status, for assert.rejects. */
function s3Error(name: string, status: number): (err: unknown) => boolean {
  return (err) => {
    const e = err as { name?: unknown; $metadata?: { httpStatusCode?: unknown } };
    assert.equal(e.name, name);
    assert.equal(e.$metadata?.httpStatusCode, status);
    return true;
  };
}

test('S3: create, head, list and delete a bucket', async () => {
  const bucket = 'fixture-scratch';
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  try {
    const head = await client.send(new HeadBucketCommand({ Bucket: bucket }));
    assert.equal(head.$metadata.httpStatusCode, 200);
    const list = await client.send(new ListBucketsCommand({}));
    assert.deepEqual(list.Buckets?.map((b) => b.Name).sort(), [BUCKET, bucket].sort());
  } finally {
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  }
  await assert.rejects(client.send(new HeadBucketCommand({ Bucket: bucket })), s3Error('NotFound', 404));
});

test('S3: PutObject, then HeadObject returns the user metadata, length and MD5 ETag', async (t) => {
  const key = 'blobs/sha256/meta';
  const body = randomBytes(4096);
  t.after(() => client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key })));
  const metadata = { digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, 'media-type': 'application/vnd.oci.image.layer.v1.tar+gzip' };
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ContentType: 'application/octet-stream', Metadata: metadata }));

  const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.deepEqual(head.Metadata, metadata);
  assert.equal(head.ContentLength, body.length);
  assert.equal(head.ContentType, 'application/octet-stream');
  assert.equal(head.ETag, `"${createHash('md5').update(body).digest('hex')}"`);
});

test('S3: GetObject with Range answers 206 with exactly those bytes', async (t) => {
  const key = 'ranged';
  const body = Buffer.concat([...blocks('ranged', 100_000)]);
  t.after(() => client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key })));
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));

  const mid = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, Range: 'bytes=1000-70999' }));
  assert.equal(mid.$metadata.httpStatusCode, 206);
  assert.equal(mid.ContentRange, `bytes 1000-70999/${body.length}`);
  assert.equal(mid.ContentLength, 70_000);
  assert.ok((await bodyBytes(mid.Body)).equals(body.subarray(1000, 71_000)));

  const tail = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, Range: 'bytes=-10' }));
  assert.equal(tail.$metadata.httpStatusCode, 206);
  assert.ok((await bodyBytes(tail.Body)).equals(body.subarray(-10)));
});

test('S3: lib-storage Upload of a 12 MiB stream in 5 MiB parts reads back byte-identical', async (t) => {
  const key = 'multipart/12mib';
  const size = 12 * MiB + 12_345; // three parts, the last one short
  const expected = createHash('sha256');
  for (const b of blocks('multipart', size)) expected.update(b);
  t.after(() => client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key })));

  const upload = new Upload({
    client,
    params: { Bucket: BUCKET, Key: key, Body: Readable.from(blocks('multipart', size)), ContentType: 'application/octet-stream' },
    partSize: 5 * MiB,
    queueSize: 2,
  });
  const parts: number[] = [];
  upload.on('httpUploadProgress', (p) => {
    if (p.part !== undefined) parts.push(p.part);
  });
  const done = await upload.done();
  assert.match(done.ETag ?? '', /-3"$/, 'an S3 multipart ETag: MD5 of the part MD5s, dash, part count');
  assert.deepEqual([...new Set(parts)].sort(), [1, 2, 3]);

  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(got.ContentLength, size);
  const actual = createHash('sha256');
  let length = 0;
  for await (const chunk of got.Body as Readable) {
    const buf = chunk as Buffer;
    actual.update(buf);
    length += buf.length;
  }
  assert.equal(length, size);
  assert.equal(actual.digest('hex'), expected.digest('hex'));
});

test('S3: an aborted multipart upload leaves no object and no upload in progress', async () => {
  const key = 'multipart/aborted';
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  assert.ok(UploadId);
  const inProgress = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
  assert.deepEqual(inProgress.Uploads?.map((u) => [u.Key, u.UploadId]), [[key, UploadId]]);
  await client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: 1, Body: Buffer.concat([...blocks('aborted', 5 * MiB)]) }));

  await client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId }));

  await assert.rejects(client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })), s3Error('NotFound', 404));
  const after = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
  assert.equal(after.Uploads?.length ?? 0, 0);
});

test('S3: halt() takes the proxy down (requests fail), resume() brings it back with the data', async (t) => {
  const { s3: s } = fixtures();
  const key = 'survives-halt';
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'still here' }));
  t.after(() => client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key })));
  const before = s.pids();

  await s.halt();
  for (const pid of before) seenPids.add(pid);
  const gone = before.filter((pid) => !alive(pid));
  assert.equal(gone.length, 1, 'only the proxy was killed');
  assert.deepEqual(s.pids(), before.filter((pid) => alive(pid)));
  await assert.rejects(client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })), (err: unknown) => {
    assert.match(String((err as { code?: unknown }).code), /ECONNREFUSED/);
    return true;
  });

  await s.resume();
  for (const pid of s.pids()) seenPids.add(pid);
  assert.equal(s.pids().length, before.length);
  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(await got.Body?.transformToString(), 'still here');
});

test('Redis: SET/GET; halt() makes a command fail, resume() serves again on the same URL', async (t) => {
  const { redis: r } = fixtures();
  // No offline queue and no retry per request: while Redis is down a command fails at once
  // instead of waiting for the reconnection.
  const db = new Redis(r.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 50, connectTimeout: 1000 });
  let closes = 0;
  db.on('close', () => closes++);
  db.on('error', () => {}); // ECONNREFUSED while halted is expected; unhandled, ioredis would print it
  t.after(() => db.disconnect());
  await waitFor('ioredis ready', () => db.status === 'ready', { timeoutMs: 5000, intervalMs: 10 });

  assert.equal(await db.set('gantry:test', 'v1'), 'OK');
  assert.equal(await db.get('gantry:test'), 'v1');

  const pid = r.pid();
  await r.halt();
  seenPids.add(pid);
  assert.equal(alive(pid), false);
  assert.equal(r.pid(), 0);
  await assert.rejects(db.get('gantry:test'));

  await r.resume();
  seenPids.add(r.pid());
  assert.notEqual(r.pid(), pid);
  await waitFor('ioredis reconnects', () => db.status === 'ready', { timeoutMs: 5000, intervalMs: 10 });
  assert.equal(await db.get('gantry:test'), null, 'no persistence: a restarted Redis is empty');
  assert.equal(await db.set('gantry:test', 'v2'), 'OK');
  assert.equal(await db.get('gantry:test'), 'v2');
  await db.del('gantry:test');
  assert.ok(closes > 0, 'ioredis saw the connection go');
});
