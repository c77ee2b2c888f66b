/**
 * bin/gantry runs the compiled build only while it is current: a stale dist/ must never run
 * instead of the sources someone just edited.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, realpathSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

describe('bin/gantry picks dist/ or src/', () => {
  let dir: string;
  const run = (): string => {
    const { UV_THREADPOOL_SIZE: _, ...env } = process.env;
    const r = spawnSync(path.join(dir, 'bin', 'gantry'), ['--flag'], { encoding: 'utf8', env: { ...env, GANTRY_NODE: process.execPath } });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  };
  const age = (file: string, secondsAgo: number): void => {
    const t = Date.now() / 1000 - secondsAgo;
    utimesSync(file, t, t);
  };
  const print = (what: string): string => `console.log(${JSON.stringify(what)} + ' ' + process.argv.slice(2).join(' ') + ' ' + process.env.UV_USE_IO_URING + ' ' + process.env.UV_THREADPOOL_SIZE);\n`;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-launcher-'));
    mkdirSync(path.join(dir, 'bin'));
    copyFileSync(path.join(ROOT, 'bin', 'gantry'), path.join(dir, 'bin', 'gantry'));
    writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n');
    mkdirSync(path.join(dir, 'src', 'http'), { recursive: true });
    writeFileSync(path.join(dir, 'src', 'main.ts'), print('src'));
    writeFileSync(path.join(dir, 'src', 'http', 'routes.ts'), '');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('without a build it runs src/main.ts, with the arguments and runtime settings', () => {
    assert.equal(run(), 'src --flag 0 16');
  });

  test('a build newer than every source runs dist/main.js', () => {
    mkdirSync(path.join(dir, 'dist'), { recursive: true });
    age(path.join(dir, 'src', 'main.ts'), 60);
    age(path.join(dir, 'src', 'http', 'routes.ts'), 60);
    writeFileSync(path.join(dir, 'dist', 'main.js'), print('dist'));
    assert.equal(run(), 'dist --flag 0 16');
  });

  test('a source file edited after the build sends it back to src/', () => {
    writeFileSync(path.join(dir, 'src', 'http', 'routes.ts'), '// edited\n');
    assert.equal(run(), 'src --flag 0 16');
  });

  test('an image without src/ runs dist/', () => {
    rmSync(path.join(dir, 'src'), { recursive: true });
    assert.equal(run(), 'dist --flag 0 16');
  });

  test('dist as a symlink to a version (scripts/build.ts): the resolved path runs, current while no source is newer than the stamp', () => {
    const version = '.dist-0123456789abcdef';
    rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
    mkdirSync(path.join(dir, version));
    symlinkSync(version, path.join(dir, 'dist'));
    writeFileSync(path.join(dir, version, 'main.js'), 'console.log(process.argv[1]);\n');
    writeFileSync(path.join(dir, version, '.build-stamp'), 'hash\n');
    mkdirSync(path.join(dir, 'src', 'http'), { recursive: true });
    writeFileSync(path.join(dir, 'src', 'main.ts'), print('src'));
    writeFileSync(path.join(dir, 'src', 'http', 'routes.ts'), '');
    // main.js older than the sources, the stamp newer: a skipped build dates only the stamp.
    age(path.join(dir, version, 'main.js'), 120);
    for (const rel of ['src', 'src/http', 'src/main.ts', 'src/http/routes.ts']) age(path.join(dir, rel), 60);
    age(path.join(dir, version, '.build-stamp'), 30);
    assert.equal(run(), path.join(realpathSync(dir), version, 'main.js'));
    age(path.join(dir, version, '.build-stamp'), 90);
    assert.equal(run(), 'src --flag 0 16');
  });
});
