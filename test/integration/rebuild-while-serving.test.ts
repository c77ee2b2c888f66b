// A build while Gantry runs from the same checkout (issue 14: several nodes from one checkout):
// serving processes forked after the rebuild come from the version their main process started
// with, which is still there, and serve. Real bin/gantry and scripts/build.ts on a copy of this
// checkout (src/, bin/, the tsconfigs; node_modules linked), so the repository's own dist is left alone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { alive, childPids } from '../helpers/processes.ts';
import { answers, onFreePort, startSupervisedChild, type SupervisedChild } from '../helpers/supervised-child.ts';
import { waitFor } from '../helpers/wait-for.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORKERS = 2;

let tmp: string;
let checkout: string;

/** Every file under `dir` dated a minute back, as if edited before the build: bin/gantry then runs dist/. */
function age(dir: string): void {
  const t = Date.now() / 1000 - 60;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) utimesSync(path.join(entry.parentPath, entry.name), t, t);
  }
}

function build(): void {
  const r = spawnSync(process.execPath, [path.join(checkout, 'scripts', 'build.ts')], { cwd: checkout, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
}

function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

function healthz(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    // A connection of its own, so the answer comes from whichever serving process accepts it now.
    httpGet(`${url}/healthz`, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'gantry-rebuild-'));
  checkout = path.join(tmp, 'checkout');
  mkdirSync(path.join(checkout, 'scripts'), { recursive: true });
  cpSync(path.join(ROOT, 'src'), path.join(checkout, 'src'), { recursive: true });
  cpSync(path.join(ROOT, 'bin'), path.join(checkout, 'bin'), { recursive: true });
  for (const rel of ['scripts/build.ts', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) copyFileSync(path.join(ROOT, rel), path.join(checkout, rel));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(checkout, 'node_modules'));
  age(path.join(checkout, 'src'));
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('serving processes forked after a rebuild come from the main process\'s version, which is kept, and serve', async () => {
  build();
  const started = readlinkSync(path.join(checkout, 'dist'));
  const logFile = path.join(tmp, 'gantry.log');
  const { url, proc } = await onFreePort(async (port): Promise<{ url: string; proc: SupervisedChild }> => {
    const url = `http://127.0.0.1:${port}`;
    const proc = await startSupervisedChild({
      name: 'gantry',
      command: path.join(checkout, 'bin', 'gantry'),
      env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LISTEN: `127.0.0.1:${port}`, GANTRY_WORKERS: String(WORKERS), GANTRY_CACHE_DIR: path.join(tmp, 'cache'), GANTRY_LOG_LEVEL: 'info' },
      logFile,
      ready: () => answers(`${url}/healthz`),
      readyTimeoutMs: 20_000,
      pollMs: 50,
      settleMs: 50,
      graceMs: 10_000,
    });
    return { url, proc };
  });
  try {
    const versionDir = path.join(checkout, started);
    const workerMain = path.join(versionDir, 'serving', 'worker-main.js');
    assert.ok(cmdline(proc.pid).includes(path.join(versionDir, 'main.js')), 'bin/gantry runs the resolved version');
    const first = await waitFor('the serving processes', async () => {
      const pids = await childPids(proc.pid);
      return pids.length === WORKERS ? pids : undefined;
    }, { timeoutMs: 20_000 });
    for (const pid of first) assert.ok(cmdline(pid).includes(workerMain));

    appendFileSync(path.join(checkout, 'src', 'serving', 'worker-main.ts'), '\n// changed while a node serves\n');
    age(path.join(checkout, 'src'));
    build();
    assert.notEqual(readlinkSync(path.join(checkout, 'dist')), started, 'dist switched to the new build');
    assert.ok(existsSync(workerMain), 'the running node\'s version is kept');

    for (const pid of first) process.kill(pid, 'SIGKILL');
    await waitFor('the killed serving processes gone', () => first.every((pid) => !alive(pid)));
    const again = await waitFor('both serving processes started again', () => {
      const lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"serving process started again"'));
      return lines.length >= WORKERS;
    }, { timeoutMs: 20_000 });
    assert.ok(again);
    const now = await childPids(proc.pid);
    assert.equal(now.length, WORKERS);
    for (const pid of now) {
      assert.ok(!first.includes(pid));
      assert.ok(cmdline(pid).includes(workerMain), 'forked from the version the main process started with');
    }
    // Only serving processes listen on the public port, and only the new ones are left.
    for (let i = 0; i < 10; i++) assert.equal(await healthz(url), 200);
    assert.doesNotMatch(readFileSync(logFile, 'utf8'), /failed to start again|ERR_MODULE_NOT_FOUND/);
  } finally {
    await proc.stop();
  }
});
