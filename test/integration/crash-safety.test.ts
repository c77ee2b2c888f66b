// kill -9 a real Gantry process during fills; restart; nothing partial or
// unverified is ever servable, and the index agrees with the disk.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, truncate, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { pushBlob, randomBlob, sha256, type Blob } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder, type ForwardedRequest } from '../helpers/counting-forwarder.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const KILLS = 8;

let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let tmp: string;
const blobs: Blob[] = Array.from({ length: KILLS }, (_, i) => randomBlob(4 * MiB, `crash-${i}`));

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-crash-'));
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  for (const b of blobs) await pushBlob(origin.url, 'crash/test', b);
  // ~1 s per 4 MiB fill: time enough to kill at a chosen share of it, even on a loaded machine.
  fwd = await startCountingForwarder({ target: origin.url, bytesPerSecond: 4 * MiB });
});

after(async () => {
  await fwd?.stop();
  await origin?.stop();
  await rm(tmp, { recursive: true, force: true });
});

async function getBlob(url: string, b: Blob): Promise<{ status: number; cache: string | undefined; ok: boolean }> {
  const res = await request(`${url}/v2/crash/test/blobs/${b.digest}`);
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, ok: sha256(body) === b.digest };
}

async function verify(url: string): Promise<{ checked: number; bad: unknown[] }> {
  const res = await request(`${url}/admin/verify`, { method: 'POST' });
  return (await res.body.json()) as { checked: number; bad: unknown[] };
}

/**
 * Where kill `i` lands: the first KILLS-1 while the origin's response is still streaming to Gantry,
 * once it has sent a growing share of the blob (its first byte, then up to about two thirds), so no
 * fill can have committed; the last after the fill committed (the blob is already a HIT). The last
 * mid-fill kill leaves about a third of the blob (~0.3 s) to go: a kill at 6/7 left ~70 ms, which a
 * loaded CI machine (coverage on) overran once, and the fill finished before the kill.
 */
function killPoint(i: number, size: number): { midFill: true; bytes: number } | { midFill: false } {
  return i < KILLS - 1 ? { midFill: true, bytes: Math.max(1, Math.floor((size * i * 0.75) / (KILLS - 1))) } : { midFill: false };
}

/** Gantry's upstream GET for blob `b`, as the forwarder records it (updated in place as bytes flow). */
function upstreamGet(b: Blob): ForwardedRequest | undefined {
  return fwd.requests.findLast((r) => r.method === 'GET' && r.path.includes(b.digest));
}

describe('kill -9 during fills', () => {
  test(`${KILLS} kills at different moments leave nothing partial or unverified servable`, async () => {
    const cacheDir = join(tmp, 'cache');
    const env = { GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url };
    let checked = 0;
    let hits = 0;
    for (let i = 0; i < KILLS; i++) {
      const g: GantryProcess = await startGantryProcess(env);
      const b = blobs[i]!;
      const at = killPoint(i, b.bytes.length);
      // Start a pull, then kill the process at its point in the fill (or past it).
      const pull = request(`${g.url}/v2/crash/test/blobs/${b.digest}`).then((r) => r.body.arrayBuffer()).catch(() => undefined);
      // A failed assertion must not leave this process running: the test runner would wait on it for good.
      try {
        if (at.midFill) {
          const rec = await waitFor(`${at.bytes} bytes of ${b.digest} sent to Gantry`, () => {
            const r = upstreamGet(b);
            return r !== undefined && (r.bytes >= at.bytes || r.done) && r;
          }, { timeoutMs: 20_000, intervalMs: 1 });
          // The same tick as the kill: the origin was still sending, so Gantry could not have the whole blob.
          assert.ok(rec.bytes > 0 && !rec.done, `kill ${i} lands mid-fill: ${rec.bytes} of ${b.bytes.length} bytes sent, done ${rec.done}`);
          await g.kill('SIGKILL');
        } else {
          await pull;
          await waitFor(`${b.digest} committed`, async () => (await getBlob(g.url, b)).cache === 'HIT', { timeoutMs: 20_000, intervalMs: 20 });
          await g.kill('SIGKILL');
        }
      } finally {
        await g.kill('SIGKILL');
      }
      await pull;
      const restarted = await startGantryProcess(env);
      try {
        assert.deepEqual(await readdir(join(cacheDir, 'tmp')), [], 'temp files removed at start-up');
        const report = await verify(restarted.url);
        assert.deepEqual(report.bad, [], 'every indexed blob re-hashes to its digest');
        checked += report.checked;
        const got = await getBlob(restarted.url, b);
        assert.equal(got.status, 200);
        assert.ok(got.ok, 'correct bytes, whether from cache or refetched');
        assert.equal(got.cache, at.midFill ? 'MISS' : 'HIT', at.midFill ? 'a fill killed midway left nothing servable: fetched again' : 'a committed blob survives kill -9');
        if (got.cache === 'HIT') hits++;
        assert.equal((await getBlob(restarted.url, b)).cache, 'HIT');
      } finally {
        await restarted.kill('SIGTERM');
      }
    }
    assert.equal(hits, 1, 'only the blob committed before its kill was a hit after the restart');
    process.stdout.write(`# crash-safety: fills killed ${KILLS} (${KILLS - 1} mid-fill, 1 after its commit), blobs re-hashed ${checked}, hits after restart ${hits}\n`);
  });
});

describe('start-up reconciliation and gantry verify', () => {
  test('missing, truncated and orphan files are reconciled; verify finds and removes a corrupt blob', async () => {
    const cacheDir = join(tmp, 'reconcile');
    const env = { GANTRY_CACHE_DIR: cacheDir, GANTRY_UPSTREAM_URL: fwd.url };
    const [a, b, c] = [randomBlob(100_000, 'rec-a'), randomBlob(100_001, 'rec-b'), randomBlob(100_002, 'rec-c')] as [Blob, Blob, Blob];
    for (const x of [a, b, c]) await pushBlob(origin.url, 'crash/test', x);
    const path = (x: Blob) => join(cacheDir, 'blobs', 'sha256', x.digest.slice(7, 9), x.digest.slice(7));
    let g = await startGantryProcess(env);
    for (const x of [a, b, c]) assert.equal((await getBlob(g.url, x)).cache, 'MISS');
    await g.kill('SIGTERM');

    await rm(path(a)); // index entry without its file
    await truncate(path(b), 10); // wrong size
    const orphanHex = 'f'.repeat(64);
    await mkdir(join(cacheDir, 'blobs', 'sha256', 'ff'), { recursive: true });
    await writeFile(join(cacheDir, 'blobs', 'sha256', 'ff', orphanHex), 'orphan'); // file without an index entry
    const bytes = await readFile(path(c));
    bytes.writeUInt8(bytes.readUInt8(0) ^ 0xff, 0); // same size, wrong content: only a re-hash finds this
    await writeFile(path(c), bytes);

    const { stdout, code } = await execFileP('bin/gantry', ['verify'], { env: { ...process.env, GANTRY_NODE: process.execPath, ...env } }).then(
      (r) => ({ ...r, code: 0 }),
      (e: { stdout: string; code: number }) => e,
    );
    const report = JSON.parse(stdout) as { reconciled: Record<string, number>; bad: Array<{ digest: string; reason: string }> };
    assert.equal(code, 1, 'verify exits 1 when it finds bad blobs');
    assert.deepEqual(report.reconciled, { entries: 1, missingFiles: 1, wrongSize: 1, orphanFiles: 1 });
    assert.deepEqual(report.bad, [{ digest: c.digest, reason: 'digest_mismatch' }]);
    const removed = await execFileP('bin/gantry', ['verify', '--remove'], { env: { ...process.env, GANTRY_NODE: process.execPath, ...env } });
    assert.equal((JSON.parse(removed.stdout) as { removed: number }).removed, 1);

    g = await startGantryProcess(env);
    try {
      for (const x of [a, b, c]) {
        const got = await getBlob(g.url, x);
        assert.equal(got.cache, 'MISS', 'dropped entries are fetched again');
        assert.ok(got.ok);
      }
      await assert.rejects(readFile(join(cacheDir, 'blobs', 'sha256', 'ff', orphanHex)));
    } finally {
      await g.kill('SIGTERM');
    }
  });
});
