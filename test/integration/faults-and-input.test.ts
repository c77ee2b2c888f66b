// Upstream misbehaviour, auth and redirects (hand-written upstream), and
// hostile client input against a real mirror.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { randomBlob, sha256 } from '../fixtures/images.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { rawRequest } from '../helpers/raw-http.ts';

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

describe('an upstream that sends wrong bytes', () => {
  test('nothing is cached and the client connection is aborted', async () => {
    const good = randomBlob(2 * 1024 * 1024, 'wrong-bytes');
    const bad = Buffer.from(good.bytes);
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 0xff, bad.length - 1); // same length, different digest
    const upstream = await startFakeUpstream((req, res) => {
      if (req.url?.includes('/blobs/')) {
        res.writeHead(200, { 'content-length': bad.length, 'content-type': 'application/octet-stream' });
        res.end(bad);
      } else res.writeHead(404).end();
    });
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], defaultUpstream: 'example.test' });
    try {
      const url = `${mirror.url}/v2/x/y/blobs/${good.digest}`;
      for (let attempt = 0; attempt < 2; attempt++) {
        // Either the fill failed before our headers went out (an OCI error), or the body is cut short.
        let received = 0;
        try {
          const res = await request(url);
          if (res.statusCode === 200) {
            await assert.rejects(async () => {
              for await (const chunk of res.body) received += (chunk as Buffer).length;
            }, 'the body must not end cleanly');
          } else {
            assert.equal(res.statusCode, 502);
            await res.body.dump();
          }
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'UND_ERR_SOCKET', 'the connection was aborted');
        }
        assert.ok(received < bad.length, 'the client never receives a complete unverified body');
      }
      assert.equal(upstream.seen.filter((r) => r.url.includes('/blobs/')).length, 2, 'not cached: the second request went upstream again');
      const files = await listFiles(mirror.cacheDir);
      assert.deepEqual(files.filter((f) => f.startsWith('blobs/') || f.startsWith('tmp/')), [], 'no blob or temp file left');
      const head = await request(url, { method: 'HEAD' });
      await head.body.dump();
      assert.notEqual(head.headers['x-cache'], 'HIT');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });
});

describe('upstream auth, redirects and error mapping', () => {
  const blob = randomBlob(256 * 1024, 'auth-blob');
  let tokenRequests = 0;
  let cdn: Awaited<ReturnType<typeof startFakeUpstream>>;
  let upstream: Awaited<ReturnType<typeof startFakeUpstream>>;
  let mirror: Mirror;

  before(async () => {
    cdn = await startFakeUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': blob.bytes.length });
      res.end(blob.bytes);
    });
    upstream = await startFakeUpstream((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/token') {
        tokenRequests++;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: `anon-${url.searchParams.get('scope')}`, expires_in: 300 }));
        return;
      }
      const auth = req.headers.authorization;
      const scope = `repository:${url.pathname.split('/').slice(2, -2).join('/')}:pull`;
      if (auth !== `Bearer anon-${scope}` && auth !== 'Bearer client-secret') {
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="http://127.0.0.1:${url.port || (req.socket.localPort ?? 0)}/token",service="fake",scope="${scope}"`,
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      if (url.pathname.startsWith('/v2/private/') && auth !== 'Bearer client-secret') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${req.socket.localPort}/token",service="fake",scope="${scope}"` });
        res.end();
        return;
      }
      if (url.pathname.includes('/ratelimited/')) {
        res.writeHead(429, { 'retry-after': '42', 'content-type': 'text/html' });
        res.end('<html>slow down</html>');
        return;
      }
      if (url.pathname.includes('/broken/')) {
        res.writeHead(500, { 'content-type': 'text/html' });
        res.end('<html>oops</html>');
        return;
      }
      if (url.pathname.endsWith(`/blobs/${blob.digest}`)) {
        res.writeHead(307, { location: `${cdn.url}/signed/${blob.digest}?sig=abc` });
        res.end();
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] }));
    });
    mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], defaultUpstream: 'example.test' });
  });

  after(async () => {
    await mirror.destroy();
    await upstream.stop();
    await cdn.stop();
  });

  test('anonymous tokens come from the challenge realm, once per scope; redirects to a CDN carry no Authorization', async () => {
    const url = `${mirror.url}/v2/pub/img/blobs/${blob.digest}`;
    const res = await request(url);
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200);
    assert.equal(sha256(body), blob.digest);
    assert.equal(tokenRequests, 1);
    assert.equal(cdn.seen.length, 1);
    assert.equal(cdn.seen[0]?.headers.authorization, undefined, 'Authorization never goes to another host');
    // Another request in the same scope reuses the cached token.
    const other = await request(`${mirror.url}/v2/pub/img/blobs/sha256:${'1'.repeat(64)}`);
    await other.body.dump();
    assert.equal(other.statusCode, 404);
    assert.equal(tokenRequests, 1, 'the token was cached per scope');
    const seenWithToken = upstream.seen.filter((r) => r.headers.authorization === 'Bearer anon-repository:pub/img:pull');
    assert.ok(seenWithToken.length >= 2);
  });

  test("the client's own Authorization is passed through, and an upstream 401 reaches the client with its challenge", async () => {
    const anonymous = await request(`${mirror.url}/v2/private/app/manifests/v1`);
    const ab = JSON.parse(await anonymous.body.text()) as { errors: Array<{ code: string }> };
    assert.equal(anonymous.statusCode, 401, 'anonymous access the upstream refuses is refused');
    assert.equal(ab.errors[0]?.code, 'UNAUTHORIZED');
    assert.match(String(anonymous.headers['www-authenticate']), /scope="repository:private\/app:pull"/);
    const denied = await request(`${mirror.url}/v2/private/app/manifests/v1`, { headers: { authorization: 'Bearer wrong' } });
    await denied.body.dump();
    assert.equal(denied.statusCode, 401);
    assert.match(String(denied.headers['www-authenticate']), /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/);
    const n = upstream.seen.length;
    const ok = await request(`${mirror.url}/v2/private/app/blobs/sha256:${'2'.repeat(64)}`, { headers: { authorization: 'Bearer client-secret' } });
    await ok.body.dump();
    assert.equal(ok.statusCode, 404);
    assert.equal(upstream.seen[n]?.headers.authorization, 'Bearer client-secret');
  });

  test('429 becomes TOOMANYREQUESTS with Retry-After; an HTML 500 becomes a JSON 502', async () => {
    const limited = await request(`${mirror.url}/v2/ratelimited/x/manifests/v1`);
    const lb = JSON.parse(await limited.body.text()) as { errors: Array<{ code: string }> };
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.headers['retry-after'], '42');
    assert.equal(lb.errors[0]?.code, 'TOOMANYREQUESTS');
    const broken = await request(`${mirror.url}/v2/broken/x/manifests/v1`);
    const text = await broken.body.text();
    assert.equal(broken.statusCode, 502);
    assert.ok(!text.includes('<html>'));
    assert.equal((JSON.parse(text) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
  });
});

describe('hostile and malformed client input', () => {
  const blob = randomBlob(1000, 'range-blob');
  let upstream: Awaited<ReturnType<typeof startFakeUpstream>>;
  let mirror: Mirror;
  let parent: string;

  before(async () => {
    upstream = await startFakeUpstream((req, res) => {
      if (req.url?.endsWith(`/blobs/${blob.digest}`)) {
        res.writeHead(200, { 'content-length': blob.bytes.length });
        res.end(blob.bytes);
      } else if (req.url?.includes('/manifests/')) {
        const m = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}');
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': m.length, 'docker-content-digest': sha256(m) });
        res.end(m);
      } else res.writeHead(404).end();
    });
    parent = await mkdtemp(join(tmpdir(), 'gantry-hostile-'));
    mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], defaultUpstream: 'example.test' }, join(parent, 'cache'));
  });

  after(async () => {
    await mirror.destroy();
    await upstream.stop();
    await rm(parent, { recursive: true, force: true });
  });

  test('single ranges are served from cached blobs: 206 with Content-Range, 416 when unsatisfiable', async () => {
    const url = `${mirror.url}/v2/r/blob/blobs/${blob.digest}`;
    await (await request(url)).body.dump();
    const cases: Array<[string, number, number, string]> = [
      ['bytes=0-99', 0, 100, 'bytes 0-99/1000'],
      ['bytes=900-', 900, 1000, 'bytes 900-999/1000'],
      ['bytes=-10', 990, 1000, 'bytes 990-999/1000'],
      ['bytes=995-5000', 995, 1000, 'bytes 995-999/1000'],
    ];
    for (const [range, start, end, contentRange] of cases) {
      const res = await request(url, { headers: { range } });
      const body = Buffer.from(await res.body.arrayBuffer());
      assert.equal(res.statusCode, 206, range);
      assert.equal(res.headers['content-range'], contentRange);
      assert.ok(body.equals(blob.bytes.subarray(start, end)), range);
      assert.equal(res.headers['x-cache'], 'HIT');
    }
    const bad = await request(url, { headers: { range: 'bytes=1000-' } });
    const body = JSON.parse(await bad.body.text()) as { errors: Array<{ code: string }> };
    assert.equal(bad.statusCode, 416);
    assert.equal(bad.headers['content-range'], 'bytes */1000');
    assert.equal(body.errors[0]?.code, 'RANGE_INVALID');
  });

  test('invalid names, references and digests get 4xx OCI errors; push methods get 405 UNSUPPORTED', async () => {
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/v2/UPPER/case/manifests/latest', 400, 'NAME_INVALID'],
      ['GET', '/v2/a//b/manifests/latest', 400, 'NAME_INVALID'],
      ['GET', `/v2/${'a'.repeat(300)}/manifests/latest`, 400, 'NAME_INVALID'],
      ['GET', '/v2/ok/name/manifests/-bad-tag', 404, 'MANIFEST_UNKNOWN'],
      ['GET', '/v2/ok/name/manifests/sha256:abc', 404, 'MANIFEST_UNKNOWN'],
      ['GET', '/v2/ok/name/blobs/sha256:abc', 400, 'DIGEST_INVALID'],
      ['GET', `/v2/ok/name/blobs/md5:${'a'.repeat(32)}`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/ok/name/blobs/sha256:${'A'.repeat(64)}`, 400, 'DIGEST_INVALID'],
      ['POST', '/v2/ok/name/blobs/uploads/', 405, 'UNSUPPORTED'],
      ['PUT', '/v2/ok/name/manifests/latest', 405, 'UNSUPPORTED'],
      ['PATCH', '/v2/ok/name/blobs/uploads/abc', 405, 'UNSUPPORTED'],
      ['DELETE', `/v2/ok/name/blobs/sha256:${'a'.repeat(64)}`, 405, 'UNSUPPORTED'],
      ['GET', '/v2/ok/name/nonsense/x', 404, 'UNSUPPORTED'],
    ];
    for (const [method, path, status, code] of cases) {
      const res = await request(`${mirror.url}${path}`, { method });
      const text = await res.body.text();
      assert.equal(res.statusCode, status, `${method} ${path}`);
      assert.equal((JSON.parse(text) as { errors: Array<{ code: string }> }).errors[0]?.code, code, `${method} ${path}`);
      assert.equal(res.headers['content-type'], 'application/json');
    }
    assert.equal(upstream.seen.filter((r) => !r.url.includes(blob.digest)).length, 0, 'invalid input never reaches the upstream');
  });

  test('a HEAD error says the length of its GET\'s error body (404 for a reference that is neither tag nor digest)', async () => {
    for (const path of ['/v2/ok/name/manifests/-bad-tag', '/v2/ok/name/manifests/sha256:abc', '/v2/ok/name/blobs/sha256:abc']) {
      const get = await request(`${mirror.url}${path}`);
      const body = await get.body.text();
      const head = await request(`${mirror.url}${path}`, { method: 'HEAD' });
      await head.body.dump();
      assert.equal(head.statusCode, get.statusCode, path);
      assert.equal(head.headers['content-length'], String(Buffer.byteLength(body)), path);
    }
  });

  test('path traversal in any form is refused, and nothing is written outside the cache directory', async () => {
    const attacks = [
      '/v2/../../../../etc/passwd',
      '/v2/a/../../../tmp/x/manifests/latest',
      '/v2/%2e%2e/%2e%2e/etc/manifests/latest',
      '/v2/a/b/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd',
      `/v2/a/b/blobs/sha256:${'a'.repeat(62)}%2F..`,
      '/v2/a/b/manifests/..%2F..%2Fescape',
      '/v2/a%2Fb/manifests/latest',
      '/v2/a/b/manifests/%00',
      '/v2/a/b/blobs/sha256:\\..\\..\\x',
    ];
    for (const path of attacks) {
      const res = await rawRequest(mirror.url, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.ok(res.status >= 400 && res.status < 500, `${path} → ${res.status}`);
    }
    assert.deepEqual(await readdir(parent), ['cache'], 'nothing beside the cache directory');
    for (const f of await listFiles(mirror.cacheDir)) assert.match(f, /^(blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}|index\/.+)$/, f);
  });

  test('every answer carries Docker-Distribution-API-Version and the request id, however it was written', async () => {
    const cases: Array<[string, string]> = [
      ['GET', '/v2/'], ['GET', '/v2/h/img/manifests/v1'], ['HEAD', '/v2/h/img/manifests/v1'],
      ['GET', `/v2/h/img/blobs/${blob.digest}`], ['HEAD', `/v2/h/img/blobs/${blob.digest}`],
      ['GET', '/v2/BAD/manifests/x'], ['DELETE', '/v2/h/img/manifests/v1'],
    ];
    for (const [method, path] of cases) {
      const res = await request(`${mirror.url}${path}`, { method: method as 'GET', headers: { 'x-request-id': `id-${method}-${path.length}` } });
      await res.body.dump();
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', `${method} ${path}`);
      assert.equal(res.headers['x-request-id'], `id-${method}-${path.length}`, `${method} ${path}`);
    }
  });

  test('HEAD and GET of manifests and blobs pipelined on one connection are all answered, in order', async () => {
    const m = `/v2/p/img/manifests/v1`;
    const b = `/v2/p/img/blobs/${blob.digest}`;
    const reqs = [['GET', m], ['HEAD', m], ['GET', b], ['HEAD', b], ['GET', m], ['HEAD', m]] as const;
    const text = reqs.map(([method, path], i) => `${method} ${path} HTTP/1.1\r\nHost: x\r\n${i === reqs.length - 1 ? 'Connection: close\r\n' : ''}\r\n`).join('');
    const res = await rawRequest(mirror.url, text);
    const all = `${res.head}\r\n\r\n${res.body}`;
    const statuses = [...all.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((x) => Number(x[1]));
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200], all.slice(0, 2000));
    assert.equal((all.match(/docker-content-digest: sha256:/gi) ?? []).length, 6);
  });

  test('a TLS ClientHello on the plain-HTTP port (podman probes this way) gets a 400 and the server keeps serving', async () => {
    const hello = '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + 'A'.repeat(32);
    const res = await rawRequest(mirror.url, hello);
    assert.equal(res.status, 400);
    const ok = await request(`${mirror.url}/v2/x/y/blobs/${blob.digest}`);
    await ok.body.dump();
    assert.equal(ok.statusCode, 200);
  });

  test('Accept sent as several header lines (as dockerd does) is merged', async () => {
    const res = await rawRequest(
      mirror.url,
      'GET /v2/acc/img/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
        'Accept: application/vnd.docker.distribution.manifest.v2+json\r\n' +
        'Accept: application/vnd.oci.image.manifest.v1+json\r\n\r\n',
    );
    assert.equal(res.status, 200);
    const seen = upstream.seen.find((r) => r.url === '/v2/acc/img/manifests/v1');
    assert.match(String(seen?.headers.accept), /docker\.distribution\.manifest\.v2\+json.*oci\.image\.manifest\.v1\+json/);
  });
});

describe('a client that stops reading', () => {
  const big = randomBlob(32 * 1024 * 1024, 'stalled-reader');
  let upstream: Awaited<ReturnType<typeof startFakeUpstream>>;
  let mirror: Mirror;

  before(async () => {
    upstream = await startFakeUpstream((req, res) => {
      if (req.url?.endsWith(`/blobs/${big.digest}`)) {
        res.writeHead(200, { 'content-length': big.bytes.length });
        res.end(big.bytes);
      } else res.writeHead(404).end();
    });
    mirror = await startMirror({
      upstreams: [{ host: 'example.test', url: upstream.url }], defaultUpstream: 'example.test',
      upstreamBodyTimeoutMs: 500, clientIdleTimeoutMs: 1500,
    });
  });

  after(async () => {
    await mirror.destroy();
    await upstream.stop();
  });

  test('is disconnected after clientIdleTimeoutMs without progress, releasing its response', async () => {
    const path = `/v2/s/big/blobs/${big.digest}`;
    // Cache it first, so the stalled request streams from the file.
    const warm = await request(`${mirror.url}${path}`);
    assert.equal(warm.statusCode, 200);
    await warm.body.dump();
    const closedBefore = await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob' });

    const sock = connect(mirror.port, '127.0.0.1');
    let received = 0;
    sock.on('error', () => undefined);
    sock.on('data', (chunk: Buffer) => {
      received += chunk.length;
      sock.pause(); // and never read again: the mirror's writes back up
    });
    sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    try {
      await sleep(600);
      assert.ok(received > 0 && received < big.bytes.length, `got ${received} bytes before stalling`);
      assert.equal(await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob' }), closedBefore, 'still open while under the idle timeout');
      let closed = closedBefore;
      for (let i = 0; i < 100 && closed === closedBefore; i++) {
        await sleep(100);
        closed = await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob' });
      }
      assert.equal(closed, closedBefore + 1, 'the stalled response was closed by the idle timeout');
      // The mirror still serves.
      const again = await request(`${mirror.url}${path}`, { headers: { range: 'bytes=0-9' } });
      assert.equal(again.statusCode, 206);
      await again.body.dump();
    } finally {
      sock.destroy();
    }
  });
});
