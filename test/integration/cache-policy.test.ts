// Eviction, upstream selection, health endpoints and log hygiene.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { randomBlob, type Blob } from '../fixtures/images.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { parseConfig } from '../../src/config/config.ts';
import { startGantry } from '../../src/gantry.ts';

const MiB = 1024 * 1024;

function blobServer(blobs: Blob[]) {
  const byDigest = new Map(blobs.map((b) => [b.digest, b.bytes]));
  return startFakeUpstream((req, res) => {
    const digest = req.url?.split('/blobs/')[1];
    const bytes = digest ? byDigest.get(digest) : undefined;
    if (!bytes) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': bytes.length });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  });
}

async function pull(mirror: Mirror, b: Blob, query = ''): Promise<string | undefined> {
  const res = await request(`${mirror.url}/v2/evict/test/blobs/${b.digest}${query}`);
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200);
  assert.ok(body.equals(b.bytes));
  return res.headers['x-cache'] as string | undefined;
}

describe('the size budget', () => {
  const [a, b, c] = [randomBlob(MiB + 1, 'ev-a'), randomBlob(MiB + 2, 'ev-b'), randomBlob(MiB + 3, 'ev-c')] as [Blob, Blob, Blob];
  let upstream: Awaited<ReturnType<typeof blobServer>>;
  let mirror: Mirror;

  before(async () => {
    upstream = await blobServer([a, b, c]);
    mirror = await startMirror({
      upstreams: [{ host: 'example.test', url: upstream.url }],
      defaultUpstream: 'example.test',
      maxCacheBytes: 3 * MiB,
    });
  });
  after(async () => {
    await mirror.destroy();
    await upstream.stop();
  });

  test('evicts the least recently used blob when over budget', async () => {
    const path = (x: Blob) => join(mirror.cacheDir, 'blobs', 'sha256', x.digest.slice(7, 9), x.digest.slice(7));
    assert.equal(await pull(mirror, a), 'MISS');
    assert.equal(await pull(mirror, b), 'MISS');
    assert.equal(await pull(mirror, a), 'HIT'); // a is now more recent than b
    assert.equal(await pull(mirror, c), 'MISS'); // over 3 MiB: b goes
    const deadline = Date.now() + 5_000;
    while (existsSync(path(b)) && Date.now() < deadline) await sleep(10);
    assert.equal(existsSync(path(b)), false, 'b was evicted from disk');
    assert.equal(existsSync(path(a)), true);
    assert.equal(existsSync(path(c)), true);
    assert.equal(await metricValue(mirror.url, 'gantry_evictions_total'), 1);
    assert.ok((await metricValue(mirror.url, 'gantry_cache_bytes')) <= 3 * MiB);
    assert.equal(await pull(mirror, a), 'HIT');
    assert.equal(await pull(mirror, b), 'MISS', 'an evicted blob is fetched again');
  });
});

describe('upstream selection', () => {
  const blob = randomBlob(1000, 'ns-blob');
  let upstream: Awaited<ReturnType<typeof blobServer>>;
  let mirror: Mirror;
  before(async () => {
    upstream = await blobServer([blob]);
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: upstream.url }] });
  });
  after(async () => {
    await mirror.destroy();
    await upstream.stop();
  });

  test("containerd's ?ns=docker.io selects Docker Hub; an unknown ns is a 404 and never contacted", async () => {
    assert.equal(await pull(mirror, blob, '?ns=docker.io'), 'MISS');
    const n = upstream.seen.length;
    const res = await request(`${mirror.url}/v2/evict/test/blobs/${blob.digest}?ns=evil.example.com`);
    const body = JSON.parse(await res.body.text()) as { errors: Array<{ code: string }> };
    assert.equal(res.statusCode, 404);
    assert.equal(body.errors[0]?.code, 'NAME_UNKNOWN');
    assert.equal(upstream.seen.length, n);
  });

  test('/healthz, /readyz and /nope answer; /v2/ challenges to Gantry\'s token endpoint, whose anonymous token opens it', async () => {
    for (const [path, status] of [['/healthz', 200], ['/readyz', 200], ['/nope', 404]] as const) {
      const res = await request(`${mirror.url}${path}`);
      await res.body.dump();
      assert.equal(res.statusCode, status, path);
    }
    const ping = await request(`${mirror.url}/v2/`);
    await ping.body.dump();
    assert.equal(ping.statusCode, 401);
    const realm = /^Bearer realm="([^"]+)",service="gantry"$/.exec(String(ping.headers['www-authenticate']))?.[1];
    assert.equal(realm, `${mirror.url}/token`);
    const tok = await request(`${realm}?service=gantry&scope=repository:evict/test:pull`);
    const body = (await tok.body.json()) as { token: string; expires_in: number };
    assert.equal(tok.statusCode, 200);
    assert.ok(body.token.startsWith('gantry.') && body.expires_in > 0);
    const authed = await request(`${mirror.url}/v2/`, { headers: { authorization: `Bearer ${body.token}` } });
    await authed.body.dump();
    assert.equal(authed.statusCode, 200);
    const bogus = await request(`${mirror.url}/v2/`, { headers: { authorization: 'Bearer gantry.made-up' } });
    await bogus.body.dump();
    assert.equal(bogus.statusCode, 401);
  });
});

describe('logs', () => {
  test('every request is logged with a request id and result; credentials never appear', async () => {
    const blob = randomBlob(5000, 'log-blob');
    const upstream = await blobServer([blob]);
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    const dir = await mkdtemp(join(tmpdir(), 'gantry-logs-'));
    const g = await startGantry(
      parseConfig({
        listen: '127.0.0.1:0',
        cacheDir: dir,
        logLevel: 'debug',
        // One process: serving processes log to stdout, not to the sink (serving-processes.test.ts reads theirs).
        workers: 0,
        upstreams: [{ host: 'example.test', url: upstream.url, username: 'mirror', password: 'hunter2-secret' }],
      }),
      { logDestination: sink },
    );
    try {
      const res = await request(`${g.url}/v2/logs/test/blobs/${blob.digest}`, {
        headers: { authorization: 'Bearer client-token-s3cret', 'x-request-id': 'req-123' },
      });
      await res.body.dump();
      assert.equal(res.headers['x-request-id'], 'req-123');
      // The access log line is written when the response socket closes, a moment after the body.
      const access = await waitFor('the access log line of req-123', () =>
        lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'request' && l['reqId'] === 'req-123'),
      );
      assert.ok(access, 'an access log line with the request id');
      assert.equal(access['status'], 200);
      assert.equal(access['cache'], 'miss');
      assert.equal(access['bytes'], 5000);
      assert.equal(typeof access['durationMs'], 'number');
      const all = lines.join('\n');
      assert.ok(!all.includes('s3cret'), 'client token not logged');
      assert.ok(!all.includes('hunter2'), 'configured password not logged');
      assert.equal(upstream.seen.at(-1)?.headers.authorization, 'Bearer client-token-s3cret');
    } finally {
      await g.close();
      await upstream.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
