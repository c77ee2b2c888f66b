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
import { overridableSettings } from '../../../src/config/config.ts';

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
    assert.deepEqual(flags.sort(), ['cache-dir', 'listen', 'log-level', 'max-cache-bytes', 'tag-ttl-seconds', 'upstream-url']);
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
