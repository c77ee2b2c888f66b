// An upstream that goes away and comes back: Gantry serves what it has while the upstream is
// down, and uses it again within seconds of its return, whether or not clients are asking.
// Then the whole edge-site story in one run: kill -9 during fills, upstream lost and back,
// malformed traffic, and real pulls, with every object served whole and no 5xx once the
// upstream is healthy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { request } from 'undici';
import { parseConfig } from '../../src/config/config.ts';
import { startGantry, type Gantry } from '../../src/gantry.ts';
import { buildImage, buildIndex, makeLayer, makeTar, MANIFEST_ACCEPT, pushBlob, pushImage, randomBlob, sha256, type BuiltImage, type BuiltIndex } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { bucketOf, judge, LoopMonitor, runCases } from '../helpers/fuzz-runner.ts';
import { regressionCases, type FuzzTarget } from '../helpers/fuzz-cases.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { metricValue } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
/** What the issue promises: an upstream that is back is used for new misses within this long. */
const RECOVERY_BUDGET_MS = 2_000;

type LogLine = { level: number; msg?: string; [k: string]: unknown };

/** Objects of an image or index by digest: manifests (index, children) and blobs, with their bytes. */
function objectsOf(image: BuiltImage | BuiltIndex): Array<{ kind: 'manifests' | 'blobs'; digest: string; bytes: Buffer }> {
  const images = 'children' in image ? image.children : [image];
  const out: Array<{ kind: 'manifests' | 'blobs'; digest: string; bytes: Buffer }> = [];
  if ('children' in image) out.push({ kind: 'manifests', digest: image.manifestDigest, bytes: image.manifest });
  for (const img of images) {
    out.push({ kind: 'manifests', digest: img.manifestDigest, bytes: img.manifest });
    for (const b of img.blobs) out.push({ kind: 'blobs', digest: b.digest, bytes: b.bytes });
  }
  return out;
}

async function fetchObject(url: string, repo: string, o: { kind: string; digest: string }): Promise<{ status: number; body: Buffer; retryAfter: string | undefined; code: string | undefined }> {
  const res = await request(`${url}/v2/${repo}/${o.kind}/${o.digest}`, { headers: { accept: MANIFEST_ACCEPT }, headersTimeout: 20_000, bodyTimeout: 20_000 });
  const body = Buffer.from(await res.body.arrayBuffer());
  let code: string | undefined;
  if (res.statusCode >= 400) code = (JSON.parse(body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code;
  return { status: res.statusCode, body, retryAfter: res.headers['retry-after'] as string | undefined, code };
}

describe('an upstream that comes back', { timeout: 120_000 }, () => {
  let registry: UpstreamRegistry;
  let gantry: Gantry;
  let cacheDir: string;
  const logs: LogLine[] = [];
  const image = buildImage({ format: 'oci', seed: 'recovery', layers: ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => makeLayer({ [n]: `${n}\n` })) });

  const extra = randomBlob(4096, 'recovery-extra');

  before(async () => {
    registry = await startUpstreamRegistry({ storage: 'filesystem' });
    await pushImage(registry.url, 'edge/app', 'v1', image);
    await pushBlob(registry.url, 'edge/app', extra);
    cacheDir = await mkdtemp(join(tmpdir(), 'gantry-recovery-'));
    // Default breaker settings (5 failures, 30 s cooldown, 1 s probes): what an operator gets.
    const config = parseConfig({ listen: '127.0.0.1:0', logLevel: 'info', cacheDir, upstreams: [{ host: registry.host, url: registry.url }] });
    gantry = await startGantry(config, {
      logDestination: {
        write(line: string) {
          const rec = JSON.parse(line) as LogLine;
          if (rec.msg !== 'request') logs.push(rec);
        },
      },
    });
  });

  after(async () => {
    await gantry?.close();
    await registry?.stop();
    if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
  });

  test('requests a healthy upstream answers with 500 do not mark it down (no client can open the circuit for everyone)', async () => {
    // distribution answers 500 UNKNOWN to a manifest fetched by a blob's digest.
    const config = image.blobs[0];
    assert.ok(config);
    for (let i = 0; i < 8; i++) {
      const r = await fetchObject(gantry.url, 'edge/app', { kind: 'manifests', digest: config.digest });
      assert.equal(r.status, 502, 'the upstream failed this request: relayed as a 502 with an OCI body');
      assert.equal(r.code, 'UNAVAILABLE');
    }
    assert.equal(await metricValue(gantry.url, 'gantry_upstream_up', { upstream: registry.host }), 1);
    const ok = await fetchObject(gantry.url, 'edge/app', { kind: 'blobs', digest: extra.digest });
    assert.equal(ok.status, 200, 'uncached content is still fetched');
    assert.equal(sha256(ok.body), extra.digest);
  });

  test(`uncached content fails fast while it is down, and is served again within ${RECOVERY_BUDGET_MS} ms of its return`, async () => {
    const [cached, ...uncached] = objectsOf(image);
    assert.ok(cached);
    assert.equal((await fetchObject(gantry.url, 'edge/app', cached)).status, 200);

    await registry.halt({ hard: true });
    const during = [];
    for (const o of uncached) during.push(await fetchObject(gantry.url, 'edge/app', o));
    assert.deepEqual(during.map((r) => r.status), [502, 502, 502, 502, 502, 503, 503], 'five failures open the circuit, then it fails fast');
    const open = during.at(-1);
    assert.equal(open?.code, 'UNAVAILABLE');
    assert.equal(open?.retryAfter, '1', 'Retry-After from the 1 s probe schedule');
    assert.equal((await fetchObject(gantry.url, 'edge/app', cached)).status, 200, 'cached content is served while down');
    assert.equal(await metricValue(gantry.url, 'gantry_upstream_up', { upstream: registry.host }), 0);

    // Down for a few probe intervals, then back. No client asks anything until the breaker has seen it.
    await sleep(2_500);
    const back = await registry.resume();
    const deadline = back + 10_000;
    let upAt: number | undefined;
    while (performance.now() < deadline) {
      if ((await metricValue(gantry.url, 'gantry_upstream_up', { upstream: registry.host })) === 1) {
        upAt = performance.now();
        break;
      }
      await sleep(25);
    }
    assert.ok(upAt !== undefined, 'the upstream was marked up again within 10 s');
    const results = [];
    for (const o of uncached) results.push(await fetchObject(gantry.url, 'edge/app', o));
    const servedAt = performance.now();
    const recoveryMs = Math.round(upAt - back);
    process.stdout.write(`# recovery: marked up ${recoveryMs} ms after the upstream answered again; uncached content served ${Math.round(servedAt - back)} ms after\n`);
    assert.deepEqual(results.map((r) => r.status), uncached.map(() => 200));
    for (const [i, o] of uncached.entries()) assert.equal(sha256(results[i]?.body ?? Buffer.alloc(0)), o.digest);
    assert.ok(servedAt - back <= RECOVERY_BUDGET_MS, `uncached content served ${Math.round(servedAt - back)} ms after the upstream's return (budget ${RECOVERY_BUDGET_MS} ms)`);

    // Visible: one line per transition (down, back up with the downtime), and the counter.
    const transitions = logs.filter((l) => l['upstream'] === registry.host && typeof l['to'] === 'string');
    assert.deepEqual(transitions.map((l) => `${String(l['from'])}->${String(l['to'])}`), ['closed->open', 'open->closed']);
    const upLine = transitions[1];
    assert.equal(upLine?.['reason'], 'probe');
    assert.ok(typeof upLine?.['downForMs'] === 'number' && upLine['downForMs'] >= 2_500, 'the back-up line says how long it was down');
    assert.equal(await metricValue(gantry.url, 'gantry_upstream_transitions_total', { upstream: registry.host, to: 'open' }), 1);
    assert.equal(await metricValue(gantry.url, 'gantry_upstream_transitions_total', { upstream: registry.host, to: 'closed' }), 1);
    assert.ok((await metricValue(gantry.url, 'gantry_upstream_probes_total', { upstream: registry.host, result: 'down' })) >= 1);
    assert.equal(await metricValue(gantry.url, 'gantry_upstream_probes_total', { upstream: registry.host, result: 'up' }), 1);
  });
});

describe('kill -9 during fills, the upstream lost and back, then fuzz and real pulls', { timeout: 300_000 }, () => {
  const KILL_ROUNDS = 3;
  const CLIENTS = 10;
  const FUZZ_CASES = 2_000;
  let registry: UpstreamRegistry;
  let fwd: CountingForwarder;
  let tmp: string;
  let cacheDir: string;
  let env: Record<string, string>;
  let gantry: GantryProcess | undefined;
  // Three images, as a site would hold: one with a 100 MiB layer, a Docker v2 image, a two-platform index.
  // The big layer is stored, not compressed (gzip level 0), so building it costs no CPU to speak of.
  const bigLayer = gzipSync(makeTar({ 'big.bin': randomBlob(100 * MiB, 'recovery-big').bytes }), { level: 0 });
  const images: Array<{ repo: string; image: BuiltImage | BuiltIndex }> = [
    { repo: 'site/big', image: buildImage({ format: 'oci', seed: 'site-big', layers: [bigLayer, makeLayer({ 'etc/big': 'small\n' })] }) },
    { repo: 'site/tool', image: buildImage({ format: 'docker', seed: 'site-tool' }) },
    { repo: 'site/multi', image: buildIndex({ format: 'oci', seed: 'site-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] }) },
  ];
  const bigDigest = sha256(bigLayer);

  before(async () => {
    registry = await startUpstreamRegistry({ storage: 'filesystem' });
    for (const { repo, image } of images) await pushImage(registry.url, repo, 'v1', image);
    // A throttled link: the 100 MiB fill takes about 1.6 s, long enough to kill Gantry in the middle.
    fwd = await startCountingForwarder({ target: registry.url, bytesPerSecond: 64 * MiB });
    tmp = await mkdtemp(join(tmpdir(), 'gantry-edge-'));
    cacheDir = join(tmp, 'cache');
    env = { GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url };
  });

  after(async () => {
    await gantry?.kill('SIGKILL');
    await fwd?.stop();
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const allObjects = (): Array<{ repo: string; kind: 'manifests' | 'blobs'; digest: string; bytes: Buffer }> =>
    images.flatMap(({ repo, image }) => objectsOf(image).map((o) => ({ repo, ...o })));

  test(`${KILL_ROUNDS} rounds of kill -9 while ${CLIENTS} clients fill a 100 MiB layer leave nothing partial`, async () => {
    const fractions = [0.2, 0.5, 0.8];
    for (let round = 0; round < KILL_ROUNDS; round++) {
      const g = await startGantryProcess(env);
      // Killed whatever happens below: a process left running would keep the test runner waiting.
      let inProgress = false;
      const want = (fractions[round] ?? 0.5) * bigLayer.length;
      const pulls: Array<Promise<unknown>> = [];
      try {
        assert.deepEqual(await readdir(join(cacheDir, 'tmp')).catch(() => []), [], 'temp files removed at start-up');
        fwd.reset();
        for (let c = 0; c < CLIENTS; c++) {
          pulls.push(request(`${g.url}/v2/site/big/blobs/${bigDigest}`).then((r) => r.body.arrayBuffer()).catch(() => undefined));
        }
        // Kill when the one upstream download has really got that far.
        const deadline = Date.now() + 30_000;
        while (Date.now() < deadline) {
          const fill = fwd.requests.find((r) => r.method === 'GET' && r.path.includes(bigDigest));
          if (fill && fill.bytes >= want && !fill.done) {
            inProgress = true;
            break;
          }
          if (fill?.done) break;
          await sleep(5);
        }
      } finally {
        await g.kill('SIGKILL');
      }
      assert.ok(inProgress, `round ${round}: the fill was in progress past ${Math.round(want / MiB)} MiB when killed`);
      await Promise.all(pulls);
      assert.equal(fwd.count({ method: 'GET', pathIncludes: bigDigest }), 1, `round ${round}: ${CLIENTS} clients, one upstream download`);
    }
    gantry = await startGantryProcess(env);
    assert.deepEqual(await readdir(join(cacheDir, 'tmp')), [], 'temp files removed at start-up');
    const report = (await (await request(`${gantry.url}/admin/verify`, { method: 'POST' })).body.json()) as { bad: unknown[] };
    assert.deepEqual(report.bad, [], 'every indexed object re-hashes to its digest');
  });

  test('while the upstream is down, cached objects are served whole and uncached ones fail fast with an OCI error', async () => {
    assert.ok(gantry);
    // Warm one image, as a site would have before its uplink dropped.
    const tool = images[1];
    assert.ok(tool);
    for (const o of objectsOf(tool.image)) assert.equal((await fetchObject(gantry.url, tool.repo, o)).status, 200);

    await registry.halt({ hard: true });
    const statuses = new Map<string, number>();
    for (const o of allObjects()) {
      const started = performance.now();
      const r = await fetchObject(gantry.url, o.repo, o);
      assert.ok(performance.now() - started < 5_000, 'no request waits on a dead upstream');
      statuses.set(String(r.status), (statuses.get(String(r.status)) ?? 0) + 1);
      if (o.repo === tool.repo) {
        assert.equal(r.status, 200);
        assert.equal(sha256(r.body), o.digest);
      } else {
        assert.ok([502, 503].includes(r.status), `uncached while down: ${r.status}`);
        assert.equal(r.code, 'UNAVAILABLE');
      }
    }
    process.stdout.write(`# upstream down: ${[...statuses].map(([s, n]) => `${n} x ${s}`).join(', ')}\n`);
  });

  test('back for 5 s: every object of the three images is served whole', async () => {
    assert.ok(gantry);
    await registry.resume();
    await sleep(5_000);
    for (const o of allObjects()) {
      const r = await fetchObject(gantry.url, o.repo, o);
      assert.equal(r.status, 200, `${o.repo} ${o.kind} ${o.digest}: ${r.status} ${r.code ?? ''}`);
      assert.equal(sha256(r.body), o.digest);
    }
  });

  test(`${FUZZ_CASES} fuzzed requests: no 5xx (nor any other problem the fuzz test knows)`, async () => {
    assert.ok(gantry);
    const big = images[0]?.image as BuiltImage;
    const target: FuzzTarget = {
      // Not the 100 MiB layer: a fuzz case is about the request, not about streaming 100 MiB.
      repo: 'site/big', tag: 'v1', manifestDigest: big.manifestDigest, blobDigests: big.blobs.filter((b) => b.digest !== bigDigest).map((b) => b.digest),
      upstreamHost: 'docker.io', marker: `gantry-edge-escape-${process.pid}`,
    };
    const monitor = new LoopMonitor();
    const count = regressionCases(target).length + FUZZ_CASES;
    const outcomes = await runCases(Number(new URL(gantry.url).port), 'gantry-edge-1', Array.from({ length: count }, (_, i) => i), target, monitor).finally(() => monitor.stop());
    const buckets = new Map<string, number>();
    for (const o of outcomes) buckets.set(bucketOf(o), (buckets.get(bucketOf(o)) ?? 0) + 1);
    process.stdout.write(`# edge fuzz: ${outcomes.length} cases; ${[...buckets].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}:${v}`).join(' ')}\n`);
    assert.equal(gantry.child.exitCode ?? gantry.child.signalCode, null, `gantry is still running; its stderr: ${(await gantry.stderr()).slice(-2000)}`);
    const problems = outcomes.flatMap((o) => judge(o).map((p) => `case ${o.c.index} [${o.c.category}] ${o.c.label}: ${p.text}`));
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
  });

  test('pulls after the fuzz work: skopeo copies every image byte-identical, twice', async () => {
    assert.ok(gantry);
    const host = new URL(gantry.url).host;
    for (let attempt = 0; attempt < 2; attempt++) {
      for (const { repo, image } of images) {
        const dest = await mkdtemp(join(tmp, 'pull-'));
        await execFileP('skopeo', ['--insecure-policy', 'copy', '--all', '--src-tls-verify=false', `docker://${host}/${repo}:v1`, `dir:${dest}`], { timeout: 120_000 });
        const files = await readdir(dest);
        for (const o of objectsOf(image)) {
          if (o.kind === 'blobs') assert.ok(files.includes(o.digest.slice(7)), `${repo}: skopeo wrote blob ${o.digest}`);
        }
        await rm(dest, { recursive: true, force: true });
      }
    }
  });
});
