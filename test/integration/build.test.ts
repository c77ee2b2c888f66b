/**
 * scripts/build.ts never disturbs a node running from the same checkout: with unchanged inputs it
 * writes nothing, a new build goes to a new version directory that `dist` is switched to, a
 * process started from an old version can still load modules from it afterwards, and concurrent
 * builds all succeed. On a throwaway checkout with a tiny src/ (the real script, bin/gantry,
 * tsconfigs and node_modules), so each compile takes about a second.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { alive } from '../helpers/processes.ts';
import { waitFor } from '../helpers/wait-for.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VERSION_DIR = /^\.dist-[0-9a-f]{16}$/;

// main.ts forks lazy.ts for each line on stdin, from its own directory, as Gantry forks serving
// processes from its build long after it started.
const MAIN_TS = `import { execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VERSION } from './version.ts';

const ext = extname(fileURLToPath(import.meta.url));
process.stdout.write(\`main \${VERSION} \${ext}\\n\`);
if (process.argv.includes('--serve')) {
  createInterface({ input: process.stdin }).on('line', () => {
    const lazy = fileURLToPath(new URL(\`./lazy\${ext}\`, import.meta.url));
    try {
      process.stdout.write(execFileSync(process.execPath, [lazy], { encoding: 'utf8' }));
    } catch (e) {
      process.stdout.write(\`failed \${String(e).split('\\n')[0] ?? ''}\\n\`);
    }
  });
}
`;
const LAZY_TS = `import { VERSION } from './version.ts';
process.stdout.write(\`lazy \${VERSION}\\n\`);
`;

describe('scripts/build.ts: versioned builds that running nodes survive', () => {
  let dir: string;
  let server: ChildProcessWithoutNullStreams | undefined;
  /** The version the long-running node started from. */
  let serverVersion = '';
  /** The three versions built last while that node ran. */
  let newest: string[] = [];
  const serverLines: string[] = [];

  /** Source files dated a minute back, as if edited before the build: bin/gantry then picks dist/. */
  const writeSource = (rel: string, text: string, secondsAgo = 60): void => {
    const file = path.join(dir, 'src', rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
    const t = Date.now() / 1000 - secondsAgo;
    utimesSync(file, t, t);
  };
  const setVersion = (v: string): void => writeSource('version.ts', `export const VERSION = '${v}';\n`);

  const build = (): { status: number | null; stderr: string; ms: number } => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [path.join(dir, 'scripts', 'build.ts')], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stderr: `${r.stdout}${r.stderr}`, ms: performance.now() - t0 };
  };
  const buildAsync = (): Promise<{ status: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [path.join(dir, 'scripts', 'build.ts')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 60_000);
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stderr: out });
      });
    });
  /** One run of bin/gantry, as a new node started from this checkout now. */
  const gantry = (): string => {
    const r = spawnSync(path.join(dir, 'bin', 'gantry'), [], { encoding: 'utf8', env: { ...process.env, GANTRY_NODE: process.execPath }, timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  };
  const target = (): string => {
    assert.ok(lstatSync(path.join(dir, 'dist')).isSymbolicLink(), 'dist is a symlink');
    return readlinkSync(path.join(dir, 'dist'));
  };
  const versions = (): string[] => readdirSync(dir).filter((n) => VERSION_DIR.test(n)).sort();
  const scratch = (): string[] => readdirSync(dir).filter((n) => /^\.dist-(tmp|link|trash)-/.test(n));
  const stamp = (version: string): string => readFileSync(path.join(dir, version, '.build-stamp'), 'utf8').trim();
  const ask = async (): Promise<string> => {
    assert.ok(server);
    const before = serverLines.length;
    server.stdin.write('load\n');
    return waitFor('the running node to answer', () => serverLines[before], { timeoutMs: 10_000 });
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-build-'));
    for (const rel of ['scripts/build.ts', 'bin/gantry', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json']) {
      mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      copyFileSync(path.join(ROOT, rel), path.join(dir, rel));
    }
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    writeSource('main.ts', MAIN_TS);
    writeSource('lazy.ts', LAZY_TS);
    setVersion('v1');
  });
  after(async () => {
    if (server?.pid !== undefined && alive(server.pid)) server.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  test('the first build compiles into a version directory that dist points at', () => {
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.match(target(), VERSION_DIR);
    assert.match(stamp(target()), /^[0-9a-f]{64}$/);
    assert.deepEqual(versions(), [target()]);
    assert.deepEqual(scratch(), []);
    assert.equal(gantry(), 'main v1 .js');
  });

  test('with unchanged inputs a build writes nothing; a source only touched gets the build dated again, not redone', (t) => {
    const version = target();
    const entries = readdirSync(path.join(dir, version), { recursive: true }).sort();
    const versionMtime = statSync(path.join(dir, version)).mtimeMs;
    const mainMtime = statSync(path.join(dir, version, 'main.js')).mtimeMs;
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', 'nothing compiled');
    t.diagnostic(`up-to-date build: ${Math.round(r.ms)} ms`);
    assert.equal(target(), version);
    assert.deepEqual(readdirSync(path.join(dir, version), { recursive: true }).sort(), entries);
    assert.equal(statSync(path.join(dir, version)).mtimeMs, versionMtime);
    assert.equal(statSync(path.join(dir, version, 'main.js')).mtimeMs, mainMtime);
    assert.deepEqual(versions(), [version]);

    // Same content, new mtime (a checkout, an editor's save): bin/gantry would fall back to src/
    // until the build dates its stamp after the source.
    writeSource('lazy.ts', LAZY_TS, 0);
    assert.equal(gantry(), 'main v1 .ts');
    const again = build();
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.stderr, '', 'nothing compiled');
    assert.equal(target(), version);
    assert.equal(statSync(path.join(dir, version, 'main.js')).mtimeMs, mainMtime);
    assert.equal(gantry(), 'main v1 .js');
  });

  test('a build after a source change is a new version; a node started from the old one still loads from it', async () => {
    server = spawn(path.join(dir, 'bin', 'gantry'), ['--serve'], { env: { ...process.env, GANTRY_NODE: process.execPath } });
    let partial = '';
    server.stdout.on('data', (c: Buffer) => {
      const lines = (partial + c.toString()).split('\n');
      partial = lines.pop() ?? '';
      serverLines.push(...lines);
    });
    await waitFor('the node to start', () => serverLines[0], { timeoutMs: 10_000 });
    assert.equal(serverLines[0], 'main v1 .js');
    assert.equal(await ask(), 'lazy v1');
    serverVersion = target();

    setVersion('v2');
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.notEqual(target(), serverVersion);
    assert.equal(gantry(), 'main v2 .js');
    assert.equal(await ask(), 'lazy v1', 'the running node still forks from its own version');
  });

  test('old versions go, except the newest three and one a live node runs', async () => {
    const v2 = target();
    const built: string[] = [];
    for (const v of ['v3', 'v4', 'v5']) {
      setVersion(v);
      const r = build();
      assert.equal(r.status, 0, r.stderr);
      built.push(target());
    }
    assert.ok(!versions().includes(v2), 'v2: not in use, not among the newest three');
    assert.deepEqual(versions(), [serverVersion, ...built].sort());
    assert.equal(await ask(), 'lazy v1');

    newest = built;
    assert.ok(server?.pid !== undefined);
    const pid = server.pid;
    server.kill('SIGKILL');
    await waitFor('the node to exit', () => !alive(pid));
  });

  test('three builds at once all succeed, compile once and leave one consistent dist; the stopped node\'s version goes', async () => {
    setVersion('v6');
    const results = await Promise.all([buildAsync(), buildAsync(), buildAsync()]);
    for (const r of results) assert.equal(r.status, 0, r.stderr);
    assert.equal(results.filter((r) => r.stderr.includes('dist ->')).length, 1, results.map((r) => r.stderr).join('\n'));
    assert.equal(gantry(), 'main v6 .js');
    assert.equal(stamp(target()), stamp('dist'));
    assert.deepEqual(versions(), [...newest.slice(1), target()].sort());
    assert.deepEqual(scratch(), []);
  });

  test('a failed compile leaves dist as it was', () => {
    const before = target();
    writeSource('broken.ts', 'export const n: number = "not a number";\n');
    const r = build();
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /TS2322/);
    assert.equal(target(), before);
    assert.deepEqual(scratch(), []);
    rmSync(path.join(dir, 'src', 'broken.ts'));
    assert.equal(build().stderr, '', 'the same inputs as before: up to date');
  });

  test('a plain dist/ directory (the old build) is replaced by the symlink; a kept version is reused, not compiled', () => {
    const current = target();
    rmSync(path.join(dir, 'dist'));
    mkdirSync(path.join(dir, 'dist'));
    writeFileSync(path.join(dir, 'dist', 'main.js'), 'process.stdout.write("plain\\n");\n');
    assert.equal(gantry(), 'plain');
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(target(), current);
    assert.equal(gantry(), 'main v6 .js');
    assert.deepEqual(scratch(), []);
  });
});
