// Protocol fuzzing: ten thousand malformed requests over raw TCP against a real
// mirror in front of a real registry. Nothing may crash, hang, answer 5xx,
// answer an error without an OCI body, block the event loop, or write outside
// the cache directory; afterwards a correct pull must still work.
//
// Deterministic: FUZZ_SEED (default below) and FUZZ_CASES choose the cases;
// case i is the same bytes whatever the concurrency. A failure names the case
// index, so `FUZZ_ONLY=<i>` replays just that one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { parseConfig } from '../../src/config/config.ts';
import { startGantry, type Gantry } from '../../src/gantry.ts';
import { buildImage, makeLayer, MANIFEST_ACCEPT, pushImage, randomBlob, sha256 } from '../fixtures/images.ts';
import { CATEGORIES, describeBytes, fuzzCase, regressionCases, type FuzzTarget } from '../helpers/fuzz-cases.ts';
import { bucketOf, exchange, judge, LoopMonitor, LOOP_BLOCK_MS, MONITOR_INTERVAL_MS, runCases, type Outcome } from '../helpers/fuzz-runner.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const SEED = process.env['FUZZ_SEED'] ?? 'gantry-fuzz-1';
const CASES = Number(process.env['FUZZ_CASES'] ?? 10_000);
const ONLY = process.env['FUZZ_ONLY'] === undefined ? undefined : Number(process.env['FUZZ_ONLY']);
/** Write one line per case (index, category, outcome, label) to this file, for looking through what happened. */
const DUMP = process.env['FUZZ_DUMP'];
/** A problem without the parts that differ between instances (ids, bodies, response index). */
function problemShape(p: string): string {
  return p.replace(/^response \d+: /, '').replace(/ \(reqId [^)]*\)/, '').replace(/ body ".*$/, '').replace(/\d+ ms/g, 'N ms');
}

/** `HEAD /v2/fuzz/img/tags/list → 502` → `HEAD /v2/<name>/tags/list → 502`. */
function routeShape(accessLine: string): string {
  return accessLine.replace(/\/v2\/.+\/(manifests|blobs|referrers)\/\S+/, '/v2/<name>/$1/<ref>').replace(/\/v2\/.+\/tags\/list/, '/v2/<name>/tags/list');
}

// ---------------------------------------------------------------------------------------------
// Files

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isDirectory()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

const CACHE_FILE = /^(?:blobs\/sha256\/([0-9a-f]{2})\/([0-9a-f]{64})|blobs\/sha512\/([0-9a-f]{2})\/([0-9a-f]{128})|index\/[^/]+|tmp\/[^/]+)$/;

function cacheFileOk(f: string): boolean {
  const m = CACHE_FILE.exec(f);
  if (!m) return false;
  const [, a, hexA, b, hexB] = m;
  if (a !== undefined) return hexA?.startsWith(a) ?? false;
  if (b !== undefined) return hexB?.startsWith(b) ?? false;
  return true;
}

// ---------------------------------------------------------------------------------------------

type LogRecord = { level: number; msg?: string; status?: number; reqId?: string; [k: string]: unknown };

describe('fuzzing the HTTP surface', { timeout: 180_000 }, () => {
  let registry: UpstreamRegistry;
  let gantry: Gantry;
  let parent: string;
  let cacheDir: string;
  let target: FuzzTarget;
  let image: ReturnType<typeof buildImage>;
  /** Log records worth keeping: warn and above, and access lines with a 5xx status. */
  const logs: LogRecord[] = [];
  /** Every access line, by request id: what was asked and what the log says was answered. */
  const access = new Map<string, string>();
  let outcomes: Outcome[] = [];
  let monitor: LoopMonitor | undefined;

  before(async () => {
    registry = await startUpstreamRegistry({ storage: 'inmemory' });
    image = buildImage({ format: 'oci', layers: [makeLayer({ 'data.bin': randomBlob(64 * 1024, 'fuzz-layer').bytes }), makeLayer({ 'etc/hello': 'fuzz\n' })], seed: 'fuzz' });
    await pushImage(registry.url, 'fuzz/img', 'v1', image);
    parent = await mkdtemp(join(tmpdir(), 'gantry-fuzz-'));
    cacheDir = join(parent, 'cache');
    // startMirror() builds the same config, but its logs go nowhere; these are kept so a 5xx can be shown with its log line.
    const config = parseConfig({
      listen: '127.0.0.1:0',
      logLevel: 'info',
      cacheDir,
      upstreams: [{ host: registry.host, url: registry.url }],
    });
    gantry = await startGantry(config, {
      logDestination: {
        write(line: string) {
          let rec: LogRecord;
          try {
            rec = JSON.parse(line) as LogRecord;
          } catch {
            logs.push({ level: 60, msg: `unparseable log line: ${line.slice(0, 500)}` });
            return;
          }
          if (rec.msg === 'request' && typeof rec.reqId === 'string') {
            access.set(rec.reqId, `${String(rec['method'])} ${String(rec['path'])} → ${String(rec.status)}${rec['aborted'] ? ' (aborted)' : ''}`);
          }
          if ((rec.level >= 40 || (typeof rec.status === 'number' && rec.status >= 500)) && logs.length < 1000) logs.push(rec);
        },
      },
    });
    target = {
      repo: 'fuzz/img',
      tag: 'v1',
      manifestDigest: image.manifestDigest,
      blobDigests: image.blobs.map((b) => b.digest),
      upstreamHost: registry.host,
      marker: `gantry-fuzz-escape-${process.pid}`,
    };
    // Warm one blob so Range requests also hit the cached-file path.
    const warm = await request(`${gantry.url}/v2/fuzz/img/blobs/${target.blobDigests[1]}`);
    await warm.body.dump();
    assert.equal(warm.statusCode, 200);
  });

  after(async () => {
    monitor?.stop();
    await gantry?.close();
    await registry?.stop();
    if (parent) await rm(parent, { recursive: true, force: true });
  });

  test(`${CASES} malformed requests: no 5xx, no hang, OCI error bodies from the app`, async () => {
    const port = gantry.port;
    monitor = new LoopMonitor();
    const total = regressionCases(target).length + CASES;
    const indices = ONLY !== undefined ? [ONLY] : Array.from({ length: total }, (_, i) => i);
    const t0 = performance.now();
    outcomes = await runCases(port, SEED, indices, target, monitor);
    const seconds = (performance.now() - t0) / 1000;

    // Summary: per category, the first response's status (`*`: answered below the app, by Node's parser or the adapter).
    const byCategory = new Map<string, Map<string, number>>();
    const byStatus = new Map<string, number>();
    for (const o of outcomes) {
      const bucket = bucketOf(o);
      const m = byCategory.get(o.c.category) ?? new Map<string, number>();
      m.set(bucket, (m.get(bucket) ?? 0) + 1);
      byCategory.set(o.c.category, m);
      byStatus.set(bucket, (byStatus.get(bucket) ?? 0) + 1);
    }
    if (DUMP) {
      await writeFile(DUMP, outcomes.map((o) => `${o.c.index}\t${o.c.category}\t${bucketOf(o)}\t${o.elapsedMs}ms\t${o.c.label}\t${describeBytes(o.c.chunks, 160)}`).join('\n') + '\n');
    }
    const fmt = (m: Map<string, number>): string => [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}:${v}`).join(' ');
    const lines = [`fuzz seed=${SEED} cases=${outcomes.length} in ${seconds.toFixed(1)} s (${Math.round(outcomes.length / seconds)}/s), ${access.size} reached the app; by status: ${fmt(byStatus)}`];
    for (const cat of ['regression', ...CATEGORIES]) {
      const m = byCategory.get(cat);
      if (m) lines.push(`  ${cat.padEnd(17)} ${[...m.values()].reduce((a, b) => a + b, 0)}: ${fmt(m)}`);
    }
    console.log(lines.join('\n'));

    // Failures grouped by what went wrong and on which route, with the first examples of each in full.
    const groups = new Map<string, string[]>();
    for (const o of outcomes) {
      const problems = judge(o);
      if (problems.length === 0) continue;
      const reqIds = o.responses.map((r) => r.headers.get('x-request-id')).filter((x): x is string => x !== undefined);
      const related = logs.filter((l) => l.reqId !== undefined && reqIds.includes(l.reqId)).map((l) => JSON.stringify(l).slice(0, 600));
      const shapes = problems.map((p) => {
        const id = p.response === undefined ? undefined : o.responses[p.response]?.headers.get('x-request-id');
        const line = id === undefined ? undefined : access.get(id);
        return `${problemShape(p.text)}${line ? ` [${routeShape(line)}]` : ''}`;
      });
      const key = [...new Set(shapes)].join('; ');
      const example =
        `case ${o.c.index} [${o.c.category}] ${o.c.label} (${o.elapsedMs} ms)\n    ${problems.map((p) => p.text).join('\n    ')}\n    request: ${describeBytes(o.c.chunks)}` +
        (related.length ? `\n    log: ${related.join('\n    log: ')}` : '');
      const list = groups.get(key) ?? [];
      list.push(example);
      groups.set(key, list);
    }
    const report = [...groups].map(([key, examples]) => `${examples.length}x ${key}\n  e.g. ${examples.slice(0, 2).join('\n  e.g. ')}`);
    if (report.length) console.log(`FAILURES:\n${report.join('\n')}`);
    assert.deepEqual([...groups].map(([key, examples]) => `${examples.length}x ${key}`), [], 'failed cases, grouped (details printed above)');
  });

  test('no request blocked the event loop', async () => {
    assert.ok(monitor, 'the fuzz run happened');
    monitor.stop();
    const spikes = monitor.spikes;
    if (spikes.length === 0) return;
    // Find the culprits: replay each case that was in flight during a stall, alone, and time the stall it causes.
    const culprits: string[] = [];
    const replay = new LoopMonitor();
    try {
      const candidates = [...new Set(spikes.slice(0, 3).flatMap((s) => s.inFlight))].sort((a, b) => a - b).slice(0, 100);
      for (const i of candidates) {
        const before = replay.spikes.length;
        const c = fuzzCase(SEED, i, target);
        const o = await exchange(gantry.port, c, replay);
        await sleep(MONITOR_INTERVAL_MS * 2);
        const stall = replay.spikes.slice(before).reduce((m, s) => Math.max(m, s.lagMs), 0);
        if (stall > 0) culprits.push(`case ${i} [${c.category}] ${c.label}: event loop blocked ${stall} ms (answer: ${bucketOf(o)} after ${o.elapsedMs} ms)\n    request: ${describeBytes(c.chunks, 200)}`);
      }
    } finally {
      replay.stop();
    }
    const summary = `${spikes.length} event-loop stalls over ${LOOP_BLOCK_MS} ms (longest ${Math.max(...spikes.map((s) => s.lagMs))} ms)`;
    console.log(`${summary}; culprits:\n${culprits.join('\n') || '  none isolated by replay'}`);
    assert.deepEqual(culprits, [], summary);
    assert.fail(`${summary}, no single case reproduces it alone`);
  });

  test('nothing was written outside the cache directory, and the cache holds only its own layout', async () => {
    assert.deepEqual(await readdir(parent), ['cache'], 'the parent directory holds only the cache directory');
    const files = await listFiles(cacheDir);
    const strays = files.filter((f) => !cacheFileOk(f));
    assert.deepEqual(strays, [], 'every file is blobs/<alg>/<2 hex>/<hex>, index/… or tmp/…');
    for (const dir of [tmpdir(), process.cwd(), parent, cacheDir, join(cacheDir, 'blobs'), '/']) {
      assert.equal(existsSync(join(dir, target.marker)), false, `${join(dir, target.marker)} must not exist`);
    }
    const tmpEntries = await readdir(tmpdir());
    assert.deepEqual(tmpEntries.filter((e) => e.includes(target.marker)), []);
  });

  test('no error-level log lines (an error line means the server thinks it failed)', () => {
    // Grouped by the access line of the same request (what was asked, what the log says was answered) and the message.
    const groups = new Map<string, { n: number; example: string }>();
    for (const l of logs) {
      if (l.level < 50) continue;
      const what = l.reqId === undefined ? 'no request' : routeShape(access.get(l.reqId) ?? 'unknown request');
      const err = l['err'];
      const detail = typeof err === 'string' ? err : typeof err === 'object' && err !== null ? String((err as { message?: unknown }).message) : '';
      const key = `${what}: ${String(l.msg)} (${detail.slice(0, 100)})`;
      const g = groups.get(key) ?? { n: 0, example: JSON.stringify(l).slice(0, 500) };
      g.n++;
      groups.set(key, g);
    }
    const report = [...groups].map(([key, g]) => `${g.n}x ${key}\n  e.g. ${g.example}`);
    if (report.length) console.log(`ERROR LOG LINES:\n${report.join('\n')}`);
    assert.deepEqual([...groups].map(([key, g]) => `${g.n}x ${key}`), [], 'error-level log lines, grouped (examples printed above)');
  });

  test('the mirror is alive and still serves a correct pull (manifest, every blob, a range), digests verified', async () => {
    const health = await request(`${gantry.url}/healthz`);
    assert.equal(await health.body.text(), 'ok');
    const m = await request(`${gantry.url}/v2/fuzz/img/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    const manifest = Buffer.from(await m.body.arrayBuffer());
    assert.equal(m.statusCode, 200);
    assert.equal(sha256(manifest), image.manifestDigest);
    assert.equal(m.headers['docker-content-digest'], image.manifestDigest);
    const parsed = JSON.parse(manifest.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    for (const digest of [parsed.config.digest, ...parsed.layers.map((l) => l.digest)]) {
      const b = await request(`${gantry.url}/v2/fuzz/img/blobs/${digest}`);
      const body = Buffer.from(await b.body.arrayBuffer());
      assert.equal(b.statusCode, 200, digest);
      assert.equal(sha256(body), digest);
    }
    const ranged = await request(`${gantry.url}/v2/fuzz/img/blobs/${target.blobDigests[1]}`, { headers: { range: 'bytes=10-19' } });
    const part = Buffer.from(await ranged.body.arrayBuffer());
    assert.equal(ranged.statusCode, 206);
    assert.ok(part.equals(image.blobs[1]?.bytes.subarray(10, 20) ?? Buffer.alloc(0)));
  });

  test("the mirror's own metrics counted no 5xx answers", async () => {
    const metrics = await (await request(`${gantry.url}/metrics`)).body.text();
    const fivexx = metrics.split('\n').filter((l) => l.startsWith('gantry_requests_total{') && /status="5\d\d"/.test(l) && !l.endsWith(' 0'));
    assert.deepEqual(fivexx, [], 'gantry_requests_total has no 5xx samples');
  });
});
