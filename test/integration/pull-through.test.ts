// Gantry in front of a real Distribution registry, with a counting forwarder
// between them as the proof of what went upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { request } from 'undici';
import { buildImage, buildIndex, MANIFEST_ACCEPT, pushBlob, pushImage, randomBlob, sha256, type BuiltImage, type BuiltIndex } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const execFileP = promisify(execFile);
const skopeo = async (...args: string[]): Promise<string> =>
  (await execFileP('skopeo', ['--insecure-policy', ...args], { timeout: 60_000, maxBuffer: 16 << 20 })).stdout;

let origin: UpstreamRegistry;
let tmp: string;

const images = {
  docker: buildImage({ format: 'docker', seed: 'pt-docker' }),
  oci: buildImage({ format: 'oci', seed: 'pt-oci' }),
  multi: buildIndex({ format: 'oci', seed: 'pt-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] }),
  library: buildImage({ format: 'docker', seed: 'pt-library' }),
} satisfies Record<string, BuiltImage | BuiltIndex>;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-pt-'));
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  await pushImage(origin.url, 'test/docker', 'v1', images.docker);
  await pushImage(origin.url, 'test/oci', 'v1', images.oci);
  await pushImage(origin.url, 'test/multi', 'v1', images.multi);
  await pushImage(origin.url, 'library/busybox', 'latest', images.library);
});

after(async () => {
  await origin?.stop();
  await rm(tmp, { recursive: true, force: true });
});

/** A fresh mirror behind its own forwarder, so counts belong to one test. */
async function setup(opts: { tagTtlSeconds?: number; bytesPerSecond?: number; extra?: Record<string, unknown> } = {}) {
  const fwd = await startCountingForwarder({ target: origin.url, ...(opts.bytesPerSecond ? { bytesPerSecond: opts.bytesPerSecond } : {}) });
  const mirror = await startMirror({
    upstreams: [{ host: 'docker.io', url: fwd.url }],
    tagTtlSeconds: opts.tagTtlSeconds ?? 300,
    ...opts.extra,
  });
  return {
    fwd,
    mirror,
    async stop() {
      await mirror.destroy();
      await fwd.stop();
    },
  };
}

function allManifestsAndBlobs(img: BuiltImage | BuiltIndex): Array<{ digest: string; bytes: Buffer }> {
  const out = [{ digest: img.manifestDigest, bytes: img.manifest }];
  if ('children' in img) for (const c of img.children) out.push(...allManifestsAndBlobs(c));
  else out.push(...img.blobs);
  return out;
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

const host = (m: Mirror): string => m.url.replace('http://', '');

describe('pulling through Gantry', () => {
  test('skopeo copy gives byte-identical manifests and blobs for docker, OCI and multi-arch images', async () => {
    const env = await setup();
    try {
      for (const [repo, img] of [['test/docker', images.docker], ['test/oci', images.oci], ['test/multi', images.multi]] as const) {
        const dest = await mkdtemp(join(tmp, 'skopeo-'));
        await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${host(env.mirror)}/${repo}:v1`, `dir:${dest}`);
        const files = await readdir(dest);
        const top = await readFile(join(dest, 'manifest.json'));
        assert.ok(top.equals(img.manifest), `${repo}: top-level manifest is byte-identical`);
        for (const { digest, bytes } of allManifestsAndBlobs(img)) {
          const hex = digest.slice('sha256:'.length);
          if (digest === img.manifestDigest) continue;
          const name = files.find((f) => f === hex || f === `${hex}.manifest.json`);
          assert.ok(name, `${repo}: skopeo wrote ${digest}`);
          assert.ok((await readFile(join(dest, name))).equals(bytes), `${repo}: ${digest} is byte-identical`);
        }
      }
      // Both platforms of the index were pulled through the mirror.
      for (const child of images.multi.children) {
        assert.equal(env.fwd.count({ method: 'GET', pathIncludes: `/manifests/${child.manifestDigest}` }), 1);
        for (const b of child.blobs) assert.equal(env.fwd.count({ method: 'GET', pathIncludes: `/blobs/${b.digest}` }), 1);
      }
    } finally {
      await env.stop();
    }
  });

  test('a second pull within the tag TTL sends nothing upstream; after the TTL only HEADs', async () => {
    const env = await setup({ tagTtlSeconds: 2 });
    try {
      const ref = `docker://${host(env.mirror)}/test/oci:v1`;
      const pull = async () => skopeo('copy', '--src-tls-verify=false', ref, `dir:${await mkdtemp(join(tmp, 'ttl-'))}`);
      await pull();
      const afterFirst = env.fwd.requests.length;
      assert.ok(afterFirst > 0);
      await pull();
      assert.equal(env.fwd.requests.length, afterFirst, 'second pull within the TTL: no upstream request at all');
      await sleep(2_100); // let the tag TTL (2 s) expire; the counts below are the proof
      const before = env.fwd.requests.length;
      await pull();
      const later = env.fwd.requests.slice(before);
      assert.ok(later.length >= 1, 'the tag was revalidated');
      assert.deepEqual([...new Set(later.map((r) => r.method))], ['HEAD'], 'after the TTL only HEADs go upstream');
    } finally {
      await env.stop();
    }
  });

  test('single-component names get library/ on Docker Hub', async () => {
    const env = await setup();
    try {
      const res = await get(`${env.mirror.url}/v2/busybox/manifests/latest`, { accept: MANIFEST_ACCEPT });
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(images.library.manifest));
      assert.equal(env.fwd.count({ pathIncludes: '/v2/library/busybox/manifests/latest' }), 1);
    } finally {
      await env.stop();
    }
  });

  test('manifest headers are exact, HEAD has no body and a GET by digest after HEAD by tag is served', async () => {
    const env = await setup();
    try {
      const head = await request(`${env.mirror.url}/v2/test/docker/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
      await head.body.dump();
      assert.equal(head.statusCode, 200);
      assert.equal(head.headers['docker-content-digest'], images.docker.manifestDigest);
      assert.equal(head.headers['content-type'], images.docker.mediaType);
      assert.equal(Number(head.headers['content-length']), images.docker.manifest.length);
      assert.equal(head.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.equal(env.fwd.count({ method: 'GET' }), 0, 'HEAD never downloads');
      const res = await get(`${env.mirror.url}/v2/test/docker/manifests/${images.docker.manifestDigest}`, { accept: MANIFEST_ACCEPT });
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(images.docker.manifest));
      assert.equal(res.headers['x-cache'], 'MISS');
      const again = await get(`${env.mirror.url}/v2/test/docker/manifests/${images.docker.manifestDigest}`, { accept: MANIFEST_ACCEPT });
      assert.equal(again.headers['x-cache'], 'HIT');
      // A cached manifest is only served if the client's Accept allows it.
      const wrongAccept = await get(`${env.mirror.url}/v2/test/docker/manifests/${images.docker.manifestDigest}`, { accept: 'application/vnd.oci.image.index.v1+json' });
      assert.notEqual(wrongAccept.headers['x-cache'], 'HIT');
      // Blob HEAD: size and digest, no download.
      const blob = images.docker.blobs[1]!;
      const bh = await request(`${env.mirror.url}/v2/test/docker/blobs/${blob.digest}`, { method: 'HEAD' });
      await bh.body.dump();
      assert.equal(bh.statusCode, 200);
      assert.equal(Number(bh.headers['content-length']), blob.bytes.length);
      assert.equal(env.fwd.count({ method: 'GET', pathIncludes: '/blobs/' }), 0);
    } finally {
      await env.stop();
    }
  });

  test('tags/list and referrers are passed through, with n and last', async () => {
    const env = await setup();
    try {
      await pushImage(origin.url, 'test/tags', 'a', images.docker);
      await pushImage(origin.url, 'test/tags', 'b', images.docker);
      const res = await get(`${env.mirror.url}/v2/test/tags/tags/list?n=1&last=a`);
      assert.equal(res.status, 200);
      // distribution 2.8 applies its own pagination rules; the mirror must relay them unchanged.
      const direct = await get(`${origin.url}/v2/test/tags/tags/list?n=1&last=a`);
      assert.ok(res.body.equals(direct.body), 'the same body as the upstream gives');
      assert.deepEqual(JSON.parse(res.body.toString()).name, 'test/tags');
      assert.equal(env.fwd.count({ pathIncludes: '/v2/test/tags/tags/list?n=1&last=a' }), 1);
      const missing = await get(`${env.mirror.url}/v2/test/nothing-here/tags/list`);
      assert.equal(missing.status, 404);
      assert.equal(JSON.parse(missing.body.toString()).errors[0].code, 'NAME_UNKNOWN');
      const ref = await get(`${env.mirror.url}/v2/test/docker/referrers/${images.docker.manifestDigest}`);
      // distribution 2.8 predates the referrers API: its 404 must come back as an OCI error, not a 500.
      assert.ok(ref.status === 200 || ref.status === 404, `referrers status ${ref.status}`);
      assert.equal(env.fwd.count({ pathIncludes: '/referrers/' }), 1);
    } finally {
      await env.stop();
    }
  });
});

describe('coalescing', () => {
  const big = randomBlob(64 * 1024 * 1024, 'coalesce-64');
  before(async () => pushBlob(origin.url, 'test/big', big));

  test('20 concurrent GETs of one uncached 64 MiB blob: one upstream GET, 20 correct bodies, followers stream early', async () => {
    // ~2 s download: long enough that "before the download completes" means something.
    const env = await setup({ bytesPerSecond: 32 * 1024 * 1024 });
    try {
      const url = `${env.mirror.url}/v2/test/big/blobs/${big.digest}`;
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await request(url);
          const hash = createHash('sha256');
          let firstByte = -1;
          for await (const chunk of res.body) {
            if (firstByte < 0) firstByte = performance.now() - t0;
            hash.update(chunk as Buffer);
          }
          return { status: res.statusCode, cache: res.headers['x-cache'], digest: `sha256:${hash.digest('hex')}`, firstByte, end: performance.now() - t0 };
        }),
      );
      assert.equal(env.fwd.count({ method: 'GET', pathIncludes: big.digest }), 1, 'exactly one upstream GET');
      for (const r of results) {
        assert.equal(r.status, 200);
        assert.equal(r.digest, big.digest);
      }
      assert.deepEqual(results.map((r) => r.cache).sort(), ['COALESCED', ...Array(19).fill('COALESCED')].slice(0, 19).concat('MISS').sort());
      const lastFirstByte = Math.max(...results.map((r) => r.firstByte));
      const firstEnd = Math.min(...results.map((r) => r.end));
      assert.ok(lastFirstByte < firstEnd, `every client had bytes (${lastFirstByte.toFixed(0)} ms) before any finished (${firstEnd.toFixed(0)} ms)`);
      const hit = await request(url, { method: 'HEAD' });
      await hit.body.dump();
      assert.equal(hit.headers['x-cache'], 'HIT');
    } finally {
      await env.stop();
    }
  });

  test('the first client disconnecting mid-fill does not stop the fill; the next request is a hit', async () => {
    const blob = randomBlob(16 * 1024 * 1024, 'disconnect-16');
    await pushBlob(origin.url, 'test/big', blob);
    const env = await setup({ bytesPerSecond: 16 * 1024 * 1024 });
    try {
      const url = `${env.mirror.url}/v2/test/big/blobs/${blob.digest}`;
      const ac = new AbortController();
      const res = await request(url, { signal: ac.signal });
      let got = 0;
      await assert.rejects(async () => {
        for await (const chunk of res.body) {
          got += (chunk as Buffer).length;
          if (got > 1024 * 1024) ac.abort();
        }
      });
      assert.ok(got > 0 && got < blob.bytes.length);
      // Wait (bounded) for the background fill to commit.
      const deadline = Date.now() + 20_000;
      while ((await metricValue(env.mirror.url, 'gantry_fills_total', { outcome: 'committed' })) < 1) {
        assert.ok(Date.now() < deadline, 'fill committed within 20 s');
        await sleep(50);
      }
      const next = await get(url);
      assert.equal(next.headers['x-cache'], 'HIT');
      assert.equal(sha256(next.body), blob.digest);
      assert.equal(env.fwd.count({ method: 'GET', pathIncludes: blob.digest }), 1);
    } finally {
      await env.stop();
    }
  });
});

describe('HEAD by tag (how dockerd and containerd resolve a tag)', () => {
  test('is answered from the tag record within the TTL, revalidated after it, and served stale when the upstream is down', async () => {
    const env = await setup({ tagTtlSeconds: 1 });
    try {
      const head = async () => {
        const res = await request(`${env.mirror.url}/v2/test/oci/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
        await res.body.dump();
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['docker-content-digest'], images.oci.manifestDigest);
        assert.equal(Number(res.headers['content-length']), images.oci.manifest.length);
        return res.headers['x-cache'];
      };
      assert.equal(await head(), 'MISS');
      const n = env.fwd.requests.length;
      assert.equal(await head(), 'HIT');
      assert.equal(env.fwd.requests.length, n, 'no upstream request within the TTL');
      await sleep(1_100);
      assert.equal(await head(), 'REVALIDATED');
      assert.deepEqual(env.fwd.requests.slice(n).map((r) => r.method), ['HEAD']);
      env.fwd.setTarget('http://127.0.0.1:9');
      await sleep(1_100);
      assert.equal(await head(), 'STALE');
    } finally {
      await env.stop();
    }
  });
});

describe('when the upstream goes away', () => {
  test('cached tags past their TTL and digests are still served; uncached objects fail promptly with an OCI error', async () => {
    const env = await setup({ tagTtlSeconds: 1 });
    try {
      const base = `${env.mirror.url}/v2/test/oci`;
      assert.equal((await get(`${base}/manifests/v1`, { accept: MANIFEST_ACCEPT })).status, 200);
      const layer = images.oci.blobs[1]!;
      assert.equal((await get(`${base}/blobs/${layer.digest}`)).status, 200);
      env.fwd.setTarget('http://127.0.0.1:9'); // discard port: connection refused
      await sleep(1_100); // past the 1 s TTL, so the tag must be revalidated
      const stale = await get(`${base}/manifests/v1`, { accept: MANIFEST_ACCEPT });
      assert.equal(stale.status, 200);
      assert.equal(stale.headers['x-cache'], 'STALE');
      assert.ok(stale.body.equals(images.oci.manifest));
      const blob = await get(`${base}/blobs/${layer.digest}`);
      assert.equal(blob.headers['x-cache'], 'HIT');
      assert.ok(blob.body.equals(layer.bytes));
      const t = performance.now();
      const miss = await get(`${env.mirror.url}/v2/test/docker/manifests/v1`, { accept: MANIFEST_ACCEPT });
      assert.ok(performance.now() - t < 5_000, 'fails promptly');
      assert.ok(miss.status >= 500 && miss.status < 600, `status ${miss.status}`);
      const body = JSON.parse(miss.body.toString()) as { errors: Array<{ code: string }> };
      assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
    } finally {
      await env.stop();
    }
  });
});

describe('observability and restarts', () => {
  test('/metrics agrees with what happened, and a restart serves hits without going upstream', async () => {
    const env = await setup();
    let mirror = env.mirror;
    try {
      const layer = images.docker.blobs[1]!;
      const url = () => `${mirror.url}/v2/test/docker/blobs/${layer.digest}`;
      assert.equal((await get(url())).headers['x-cache'], 'MISS');
      assert.equal((await get(url())).headers['x-cache'], 'HIT');
      assert.equal((await get(url())).headers['x-cache'], 'HIT');
      // The access-log/metrics hook runs when the response socket closes, a moment after the body.
      await waitFor('the three blob requests in /metrics', async () => (await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob' })) >= 3);
      assert.equal(await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob', result: 'miss' }), 1);
      assert.equal(await metricValue(mirror.url, 'gantry_requests_total', { kind: 'blob', result: 'hit' }), 2);
      assert.equal(await metricValue(mirror.url, 'gantry_served_bytes_total', { kind: 'blob', source: 'cache' }), 2 * layer.bytes.length);
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_bytes_total', { kind: 'blob' }), layer.bytes.length);
      assert.equal(await metricValue(mirror.url, 'gantry_cache_entries'), 1);
      assert.equal(await metricValue(mirror.url, 'gantry_upstream_requests_total', { method: 'GET', status: '200' }), 1);
      const manifestUrl = () => `${mirror.url}/v2/test/docker/manifests/v1`;
      assert.equal((await get(manifestUrl(), { accept: MANIFEST_ACCEPT })).headers['x-cache'], 'MISS');

      mirror = await mirror.restart();
      const before = env.fwd.requests.length;
      const hit = await get(url());
      assert.equal(hit.headers['x-cache'], 'HIT');
      assert.ok(hit.body.equals(layer.bytes));
      assert.equal((await get(manifestUrl(), { accept: MANIFEST_ACCEPT })).headers['x-cache'], 'HIT');
      assert.equal(env.fwd.requests.length, before, 'nothing went upstream after the restart');
      assert.equal(await metricValue(mirror.url, 'gantry_cache_entries'), 2);
    } finally {
      await mirror.destroy();
      await env.fwd.stop();
    }
  });
});
