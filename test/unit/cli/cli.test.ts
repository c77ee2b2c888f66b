/**
 * `gantry <command>`: the real launcher for what a user types (help, bad arguments), and the
 * command line parsed in-process for what each form selects.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Io } from '../../../src/cli/command.ts';
import { COMMANDS, EXIT_USAGE, parseCommandLine, runCli } from '../../../src/cli/main.ts';
import { withStoppedCache } from '../../../src/cli/cache-access.ts';
import { overridableSettings, parseConfig } from '../../../src/config/config.ts';
import type { Digest } from '../../../src/oci/digest.ts';
import type { PinRecord } from '../../../src/store/index-store.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function gantry(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { GANTRY_CONFIG: _, ...env } = process.env;
  return spawnSync(path.join(ROOT, 'bin', 'gantry'), args, { encoding: 'utf8', env: { ...env, GANTRY_NODE: process.execPath }, timeout: 30_000 });
}

function captureIo(): Io & { stdout(): string; stderr(): string } {
  let out = '';
  let err = '';
  return { out: (s) => void (out += s), err: (s) => void (err += s), stdout: () => out, stderr: () => err };
}

describe('bin/gantry help and usage errors', () => {
  test('gantry --help lists every command and exits 0', () => {
    const r = gantry('--help');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: gantry /);
    const lines = r.stdout.split('\n');
    for (const [name, cmd] of Object.entries(COMMANDS)) assert.ok(lines.some((l) => l.startsWith(`  ${name} `) && l.endsWith(cmd.summary)), name);
    assert.equal(r.stderr, '');
  });

  test('gantry <command> --help prints that command\'s usage and exits 0, not "invalid configuration"', () => {
    for (const name of Object.keys(COMMANDS)) {
      const r = gantry(name, '--help');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: gantry ${name} \\[options\\]`));
      assert.match(r.stdout, /--config <FILE>/);
      assert.doesNotMatch(r.stdout + r.stderr, /invalid configuration/);
    }
    assert.match(gantry('verify', '--help').stdout, /--remove/);
  });

  test('an unknown flag exits 2 with one line naming it', () => {
    const r = gantry('--nope');
    assert.equal(r.status, EXIT_USAGE);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, "gantry: unknown option '--nope'\n");
  });

  test('an invalid setting exits 2 with the configuration problems', () => {
    const r = gantry('--log-level', 'loud');
    assert.equal(r.status, EXIT_USAGE);
    assert.match(r.stderr, /^invalid configuration:\n {2}- logLevel: expected one of trace, /);
  });
});

describe('what a command line selects', () => {
  test('--version prints package.json\'s version and exits 0', async () => {
    const io = captureIo();
    assert.deepEqual(await parseCommandLine(['--version'], io), { exitCode: 0 });
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(io.stdout(), `${pkg.version}\n`);
  });

  test('no command, or only options, is serve', async () => {
    assert.deepEqual(await parseCommandLine([], captureIo()), { name: 'serve', options: {} });
    assert.deepEqual(await parseCommandLine(['--listen', ':1', '-c', 'f.yaml'], captureIo()), { name: 'serve', options: { listen: ':1', config: 'f.yaml' } });
    assert.deepEqual(await parseCommandLine(['serve', '--cache-dir', '/c'], captureIo()), { name: 'serve', options: { cacheDir: '/c' } });
  });

  test('verify takes --remove and the config options', async () => {
    assert.deepEqual(await parseCommandLine(['verify'], captureIo()), { name: 'verify', options: {} });
    assert.deepEqual(await parseCommandLine(['verify', '--remove', '--cache-dir', '/c'], captureIo()), { name: 'verify', options: { remove: true, cacheDir: '/c' } });
  });

  test('a missing option value and a stray argument are usage errors naming them', async () => {
    for (const [argv, named] of [[['--listen'], '--listen'], [['serve', 'stray'], 'stray'], [['verify', '--remove=yes'], '--remove']] as const) {
      const io = captureIo();
      assert.deepEqual(await parseCommandLine(argv, io), { exitCode: EXIT_USAGE });
      assert.ok(io.stderr().startsWith('gantry: ') && io.stderr().includes(named) && io.stderr().endsWith('\n'), io.stderr());
      assert.equal(io.stderr().split('\n').length, 2, io.stderr());
    }
  });

  test('every command takes every flag of the settings table', async () => {
    const flags = overridableSettings().flatMap(([, s]) => (s.flag ? [s.flag] : []));
    assert.deepEqual(flags.sort(), ['cache-dir', 'listen', 'log-level', 'max-cache-bytes', 'tag-ttl-seconds', 'upstream-url', 'workers']);
    for (const name of Object.keys(COMMANDS)) {
      for (const flag of flags) {
        const parsed = await parseCommandLine([name, `--${flag}`, 'x'], captureIo());
        assert.ok(!('exitCode' in parsed), `${name} --${flag}`);
      }
    }
  });
});

describe('gantry verify', () => {
  test('an empty cache verifies clean: JSON report on stdout, exit 0', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-cli-verify-'));
    try {
      const io = captureIo();
      assert.equal(await runCli(['verify', '--cache-dir', dir], {}, io), 0);
      const report = JSON.parse(io.stdout()) as Record<string, unknown>;
      assert.deepEqual(report, { reconciled: { entries: 0, missingFiles: 0, wrongSize: 0, orphanFiles: 0 }, checked: 0, bytes: 0, bad: [], removed: 0 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('gantry pins and gantry unpin on a stopped cache', () => {
  const D = `sha256:${'c'.repeat(64)}` as Digest;

  async function cacheWithPins(dir: string, pins: PinRecord[]): Promise<void> {
    const config = parseConfig({ cacheDir: dir, logLevel: 'silent' });
    await withStoppedCache(config, { evict: false }, async (cache) => {
      for (const p of pins) await cache.pin(p);
    });
  }

  test('what the command lines select', async () => {
    assert.deepEqual(await parseCommandLine(['pins', '--json', '--url', 'http://h:1'], captureIo()), { name: 'pins', options: { json: true, url: 'http://h:1' } });
    assert.deepEqual(await parseCommandLine(['unpin', 'nginx:1', 'ghcr.io/o/a@sha256:x'], captureIo()), { name: 'unpin', options: { args: ['nginx:1', 'ghcr.io/o/a@sha256:x'] } });
    assert.deepEqual(await parseCommandLine(['import', '--pin', 'a.tar'], captureIo()), { name: 'import', options: { pin: true, args: ['a.tar'] } });
    const io = captureIo();
    assert.deepEqual(await parseCommandLine(['pins', 'stray'], io), { exitCode: EXIT_USAGE });
    assert.match(io.stderr(), /^gantry: .*stray/);
  });

  test('pins lists them as a table or JSON; unpin releases one a line, and an unknown ref is one line naming it, exit 1', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-cli-pins-'));
    try {
      const empty = captureIo();
      assert.equal(await runCli(['pins', '--cache-dir', dir], {}, empty), 0);
      assert.equal(empty.stdout(), 'no pinned images\n');
      await cacheWithPins(dir, [
        { upstream: 'docker.io', repo: 'library/app', reference: '1', digests: [D], pinnedAt: 0 },
        { upstream: 'docker.io', repo: 'team/x', reference: D, digests: [D], pinnedAt: 0 },
      ]);
      const table = captureIo();
      assert.equal(await runCli(['pins', '--cache-dir', dir], {}, table), 0);
      const wide = `docker.io/team/x@${D}`;
      assert.deepEqual(table.stdout().split('\n'), [
        `${'REF'.padEnd(wide.length)}  DIGESTS CACHED  BYTES  PINNED AT`,
        `${'docker.io/library/app:1'.padEnd(wide.length)}  0/1             0      1970-01-01T00:00:00.000Z`,
        `${wide}  0/1             0      1970-01-01T00:00:00.000Z`,
        '',
      ]);
      const json = captureIo();
      assert.equal(await runCli(['pins', '--json', '--cache-dir', dir], {}, json), 0);
      assert.deepEqual((JSON.parse(json.stdout()) as Array<{ ref: string }>).map((p) => p.ref), ['docker.io/library/app:1', `docker.io/team/x@${D}`]);

      const unpin = captureIo();
      assert.equal(await runCli(['unpin', '--cache-dir', dir, 'app:1', 'app:2'], {}, unpin), 1);
      assert.equal(unpin.stdout(), 'unpinned docker.io/library/app:1 (1 digests, 0 cached, 0 bytes)\n');
      assert.equal(unpin.stderr(), 'gantry unpin: app:2 is not pinned\n');
      const left = captureIo();
      await runCli(['pins', '--json', '--cache-dir', dir], {}, left);
      assert.deepEqual((JSON.parse(left.stdout()) as Array<{ ref: string }>).map((p) => p.ref), [`docker.io/team/x@${D}`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('unpin without a ref, or with one that does not parse, is one line naming it, exit 2, and releases nothing', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-cli-unpin-'));
    try {
      await cacheWithPins(dir, [{ upstream: 'docker.io', repo: 'library/app', reference: '1', digests: [D], pinnedAt: 0 }]);
      const none = captureIo();
      assert.equal(await runCli(['unpin', '--cache-dir', dir], {}, none), EXIT_USAGE);
      assert.equal(none.stderr(), 'gantry unpin: give at least one image reference\n');
      const bad = captureIo();
      assert.equal(await runCli(['unpin', '--cache-dir', dir, 'app:1', 'UPPER/Case'], {}, bad), EXIT_USAGE);
      assert.match(bad.stderr(), /^gantry unpin: invalid image reference "UPPER\/Case": [^\n]+\n$/);
      const json = captureIo();
      await runCli(['pins', '--json', '--cache-dir', dir], {}, json);
      assert.equal((JSON.parse(json.stdout()) as unknown[]).length, 1, 'app:1 is still pinned');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
