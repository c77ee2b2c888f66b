// Several upstreams at once: every routing mode, isolation of cache keys,
// configured credentials, realm rules, rate-limit gauges, the circuit
// breaker and an outbound proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { buildImage, MANIFEST_ACCEPT, pushImage, sha256, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startFakeUpstream } from '../helpers/fake-upstream.ts';
import { startHttpProxy } from '../helpers/http-proxy.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const hubImage = buildImage({ format: 'docker', seed: 'route-hub' });
const internalImage = buildImage({ format: 'oci', seed: 'route-internal' });
const basicImage = buildImage({ format: 'docker', seed: 'route-basic' });

async function manifest(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers: { accept: MANIFEST_ACCEPT, ...headers } });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, body, headers: res.headers };
}

describe('routing across several upstreams', () => {
  let hub: UpstreamRegistry;
  let internal: UpstreamRegistry;
  let basic: UpstreamRegistry;
  let fHub: CountingForwarder;
  let fInternal: CountingForwarder;
  let fBasic: CountingForwarder;
  let mirror: Mirror;
  let tmp: string;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'gantry-routing-'));
    [hub, internal, basic] = await Promise.all([
      startUpstreamRegistry(),
      startUpstreamRegistry(),
      startUpstreamRegistry({ htpasswd: { username: 'mirror', password: 'mirror-pw' } }),
    ]);
    // The same repository and tag on two registries, with different content.
    await pushImage(hub.url, 'same/name', 'v1', hubImage);
    await pushImage(internal.url, 'same/name', 'v1', internalImage);
    await pushImage(basic.url, 'team/tool', 'v1', basicImage, { username: 'mirror', password: 'mirror-pw' });
    [fHub, fInternal, fBasic] = await Promise.all([
      startCountingForwarder({ target: hub.url }),
      startCountingForwarder({ target: internal.url }),
      startCountingForwarder({ target: basic.url }),
    ]);
    const pwFile = join(tmp, 'basic-password');
    await writeFile(pwFile, 'mirror-pw\n');
    mirror = await startMirror({
      upstreams: [
        { host: 'docker.io', url: fHub.url },
        { host: 'registry.internal:5000', url: fInternal.url, prefix: 'internal', virtualHosts: ['internal-mirror.test'] },
        { host: 'basic.example', url: fBasic.url, username: 'mirror', passwordFile: pwFile, allow: ['team/**'], deny: ['team/secret'] },
      ],
      defaultUpstream: 'docker.io',
    });
  });

  after(async () => {
    await mirror?.destroy();
    await Promise.all([fHub, fInternal, fBasic].map((f) => f?.stop()));
    await Promise.all([hub, internal, basic].map((r) => r?.stop()));
    await rm(tmp, { recursive: true, force: true });
  });

  test('no hint: the default upstream', async () => {
    const r = await manifest(`${mirror.url}/v2/same/name/manifests/v1`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(hubImage.manifest));
  });

  test("containerd's ?ns= selects the upstream; the cache keeps the two same-named tags apart", async () => {
    const r = await manifest(`${mirror.url}/v2/same/name/manifests/v1?ns=registry.internal:5000`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(internalImage.manifest), 'not the docker.io image cached under the same name');
    const again = await manifest(`${mirror.url}/v2/same/name/manifests/v1`);
    assert.ok(again.body.equals(hubImage.manifest));
    assert.equal(again.headers['x-cache'], 'HIT');
  });

  test('a path prefix: the registry host (with its port) or its alias', async () => {
    const n = fInternal.count({ method: 'GET' });
    for (const prefix of ['registry.internal:5000', 'internal']) {
      const r = await manifest(`${mirror.url}/v2/${prefix}/same/name/manifests/v1`);
      assert.equal(r.status, 200, prefix);
      assert.ok(r.body.equals(internalImage.manifest), prefix);
    }
    assert.equal(fInternal.count({ method: 'GET' }), n, 'both served from the cache filled via ?ns=');
    const layer = internalImage.blobs[1]!;
    const blob = await request(`${mirror.url}/v2/internal/same/name/blobs/${layer.digest}`);
    assert.equal(sha256(Buffer.from(await blob.body.arrayBuffer())), layer.digest);
    assert.ok(fInternal.count({ pathIncludes: '/v2/same/name/blobs/' }) >= 1, 'upstream saw its own repository name');
  });

  test('the Host header selects a virtual-host upstream; other Host values fall through', async () => {
    const viaHost = await manifest(`${mirror.url}/v2/same/name/manifests/v1`, { host: 'internal-mirror.test' });
    assert.ok(viaHost.body.equals(internalImage.manifest));
    const other = await manifest(`${mirror.url}/v2/same/name/manifests/v1`, { host: 'gantry.local:5000' });
    assert.ok(other.body.equals(hubImage.manifest));
  });

  test('configured credentials (password from a file) open a basic-auth registry; allow/deny patterns hold', async () => {
    const r = await manifest(`${mirror.url}/v2/basic.example/team/tool/manifests/v1`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(basicImage.manifest));
    assert.ok(fBasic.requests.some((q) => q.headers['authorization'] === `Basic ${Buffer.from('mirror:mirror-pw').toString('base64')}`));
    const denied = await manifest(`${mirror.url}/v2/basic.example/team/secret/manifests/v1`);
    assert.equal(denied.status, 403);
    const notAllowed = await manifest(`${mirror.url}/v2/basic.example/other/repo/manifests/v1`);
    assert.equal(notAllowed.status, 403);
    assert.equal(fBasic.count({ pathIncludes: 'secret' }) + fBasic.count({ pathIncludes: 'other/repo' }), 0);
  });

  test('an unknown ns is a 404 and contacts nobody', async () => {
    const before = fHub.requests.length + fInternal.requests.length + fBasic.requests.length;
    const r = await manifest(`${mirror.url}/v2/same/name/manifests/v1?ns=ghcr.io`);
    assert.equal(r.status, 404);
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'NAME_UNKNOWN');
    assert.equal(fHub.requests.length + fInternal.requests.length + fBasic.requests.length, before);
  });
});

describe('upstream health and boundaries', () => {
  test('a bearer realm on another domain gets no credentials and no request', async () => {
    const evil = await startFakeUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"token":"stolen"}');
    });
    const evilPort = new URL(evil.url).port;
    const upstream = await startFakeUpstream((req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://localhost:${evilPort}/token",service="x"` });
      res.end();
    });
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url, username: 'u', password: 'secret-pw' }] });
    try {
      const r = await manifest(`${mirror.url}/v2/a/b/manifests/v1`);
      assert.equal(r.status, 401);
      assert.equal(evil.seen.length, 0, 'the foreign realm was never contacted');
    } finally {
      await mirror.destroy();
      await upstream.stop();
      await evil.stop();
    }
  });

  test('concurrent requests needing the same anonymous token share one token request', async () => {
    let tokenRequests = 0;
    const upstream = await startFakeUpstream(async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/token') {
        tokenRequests++;
        await sleep(100); // keep the token request in flight while the others arrive
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: 'anon', expires_in: 300 }));
        return;
      }
      if (req.headers.authorization !== 'Bearer anon') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${req.socket.localPort}/token",service="x"` });
        res.end();
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}');
    });
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }] });
    try {
      // Learn the challenge first, then fire 10 requests for one scope at once.
      await (await request(`${mirror.url}/v2/a/warmup/blobs/sha256:${'0'.repeat(64)}`)).body.dump();
      const before = tokenRequests;
      const statuses = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const r = await request(`${mirror.url}/v2/a/b/blobs/sha256:${String(i).repeat(64)}`);
          await r.body.dump();
          return r.statusCode;
        }),
      );
      assert.deepEqual(statuses, Array(10).fill(404));
      assert.equal(tokenRequests - before, 1, 'one token request for ten concurrent requests in one scope');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('rate-limit headers become gauges; a 429 reaches the client with Retry-After', async () => {
    const upstream = await startFakeUpstream((_req, res) => {
      res.writeHead(429, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600', 'retry-after': '60' });
      res.end();
    });
    const mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: upstream.url }] });
    try {
      const r = await manifest(`${mirror.url}/v2/library/x/manifests/v1`);
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '60');
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_ratelimit_limit', { upstream: 'docker.io' }), 100);
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_ratelimit_remaining', { upstream: 'docker.io' }), 0);
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('the circuit breaker marks a failing upstream down, serves cached tags at once, and recovers', async () => {
    const m = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}');
    let failing = false;
    const upstream = await startFakeUpstream((req, res) => {
      if (failing) {
        res.writeHead(503).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': m.length, 'docker-content-digest': sha256(m) });
      res.end(req.method === 'HEAD' ? undefined : m);
    });
    const mirror = await startMirror({
      upstreams: [{ host: 'example.test', url: upstream.url }],
      tagTtlSeconds: 0,
      breaker: { failureThreshold: 2, cooldownSeconds: 1 },
    });
    try {
      assert.equal((await manifest(`${mirror.url}/v2/a/b/manifests/v1`)).status, 200);
      failing = true;
      assert.equal((await manifest(`${mirror.url}/v2/a/b/manifests/v1`)).headers['x-cache'], 'STALE');
      assert.equal((await manifest(`${mirror.url}/v2/a/b/manifests/v1`)).headers['x-cache'], 'STALE');
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_up', { upstream: 'example.test' }), 0, 'marked down');
      // Probes (GET /v2/) are the only requests the breaker sends while the circuit is open.
      const requests = (): number => upstream.seen.filter((r) => r.url !== '/v2/').length;
      const n = requests();
      const stale = await manifest(`${mirror.url}/v2/a/b/manifests/v1`);
      assert.equal(stale.headers['x-cache'], 'STALE');
      assert.ok(stale.body.equals(m));
      const uncached = await manifest(`${mirror.url}/v2/a/c/manifests/v1`);
      assert.equal(uncached.status, 503, 'fails fast while down');
      assert.equal(uncached.headers['retry-after'], '1', 'Retry-After follows the 1 s probe schedule, not the cooldown');
      assert.equal(requests(), n, 'nothing but probes was sent upstream while the circuit is open');
      failing = false;
      await sleep(1_100); // one 1 s probe interval; the metric below is the proof
      assert.equal((await manifest(`${mirror.url}/v2/a/c/manifests/v1`)).status, 200);
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_up', { upstream: 'example.test' }), 1, 'recovered');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('a manifest larger than maxManifestBytes is refused, not buffered', async () => {
    const huge = Buffer.alloc(64 * 1024, 0x20);
    const upstream = await startFakeUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': huge.length });
      res.end(huge);
    });
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], maxManifestBytes: '8KiB' });
    try {
      const r = await manifest(`${mirror.url}/v2/a/b/manifests/v1`);
      assert.equal(r.status, 502);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'MANIFEST_INVALID');
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  test('outbound requests go through the configured HTTP proxy', async () => {
    const proxy = await startHttpProxy();
    const m = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}');
    const upstream = await startFakeUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': m.length });
      res.end(m);
    });
    const mirror = await startMirror({ upstreams: [{ host: 'example.test', url: upstream.url }], proxy: { httpProxy: proxy.url } });
    try {
      const r = await manifest(`${mirror.url}/v2/a/b/manifests/v1`);
      assert.equal(r.status, 200);
      const target = new URL(upstream.url).host;
      assert.ok(proxy.connects.includes(target) || proxy.requests.some((u) => u.includes(target)), 'the request went through the proxy');
    } finally {
      await mirror.destroy();
      await upstream.stop();
      await proxy.stop();
    }
  });
});
