/**
 * `npm run build` (and so `npm start`, the bench and the tests): compile src/ for bin/gantry without
 * disturbing a Gantry that already runs from this checkout. Several nodes may be started from one
 * checkout, and a running node keeps loading files from its build long after it started: a serving
 * process can be forked again at any time, and modules are imported lazily. So a build never
 * deletes or rewrites files a node may still load:
 *
 *  - Each build is a version directory, `.dist-<hash>/`, named by the hash of its inputs (every
 *    file under src/, the tsconfigs, package-lock.json, this script), and `dist` is a symlink to the
 *    current one. A version directory only appears under that name complete (compiled elsewhere,
 *    then renamed) and is never written again, and `dist` is switched by renaming a new symlink over
 *    it, which replaces it atomically: a reader sees the old build or the new one, never a mix.
 *  - Node resolves an entry point and its imports by their real path, so a running node (and every
 *    serving process it forks, src/serving/supervisor.ts) stays on the version it started with even
 *    after `dist` moves on. That version is kept while a live process's command line names it
 *    (bin/gantry puts the resolved path there), and the newest few are kept regardless, for
 *    processes that were started some other way.
 *  - Version directories sit next to dist/, at the same depth, so paths relative to a compiled
 *    module (src/cli/main.ts reads ../../package.json) mean the same from any of them.
 *  - With unchanged inputs nothing is written at all: the hash is compared with dist's stamp first.
 *  - Builds that need to compile take an flock(1) on .dist.lock, so three `npm start` at once
 *    compile once and the other two find the result; the lock also guards the clean-up of old
 *    versions. The kernel drops the lock with its holder, so a killed build never leaves it stuck.
 *
 * The stamp's mtime also tells bin/gantry whether the build is current (no file under src/ may be
 * newer): it is set to the kernel's clock as read just before the inputs were hashed, so a source
 * edited after that sends bin/gantry back to src/ even when the build was skipped.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync, type Stats } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SCRIPT), '..');
const DIST = path.join(ROOT, 'dist');
/** In each version directory: the hash of the inputs it was compiled from. */
const STAMP = '.build-stamp';
const LOCK = path.join(ROOT, '.dist.lock');
/** Versions kept even when no live process names them on its command line. */
const KEEP = 3;
const VERSION = /^\.dist-[0-9a-f]{16}$/;
/** Scratch names; only a build holding the lock makes them, so the lock holder may remove any it finds. */
const SCRATCH = /^\.dist-(tmp|link|trash)-/;
/** Internal: the build runs again under flock(1) with this flag. */
const UNDER_LOCK = '--under-lock';
const LOCK_WAIT_S = 600;
const LOCK_TIMEOUT_EXIT = 75;
/** Sources that change while tsc reads them make the build start again, this many times at most. */
const ATTEMPTS = 3;

function log(line: string): void {
  process.stderr.write(`build: ${line}\n`);
}

function filesUnder(rel: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
    const child = path.posix.join(rel, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(child));
    else out.push(child);
  }
  return out;
}

function inputsHash(): string {
  const files = [...filesUnder('src'), 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json', path.relative(ROOT, SCRIPT)].sort();
  const h = createHash('sha256');
  for (const rel of files) {
    let content: Buffer | undefined;
    try {
      content = readFileSync(path.join(ROOT, rel));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    // Name and length before the bytes, so no two different file sets hash alike.
    h.update(`${rel}\0${content === undefined ? 'missing' : content.length}\0`);
    if (content !== undefined) h.update(content);
  }
  return h.digest('hex');
}

/**
 * The kernel's clock, the one source files' mtimes come from (Date.now() can run a tick ahead of
 * it). Truncating the lock file stamps it with that clock; flock(1) does not care about its content.
 */
function kernelNowNs(): bigint {
  writeFileSync(LOCK, '');
  return statSync(LOCK, { bigint: true }).mtimeNs;
}

function readStamp(dir: string): string | undefined {
  try {
    return readFileSync(path.join(dir, STAMP), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Date the stamp just before `t0Ns`, the moment the inputs were about to be read: a source
 * modified in that same clock tick counts as newer (bin/gantry then runs src/, which is safe),
 * one modified later always does. Only ever moved forward.
 */
function dateStamp(dir: string, t0Ns: bigint): void {
  const file = path.join(dir, STAMP);
  const mtimeNs = t0Ns - 1_000_000n;
  if (statSync(file, { bigint: true }).mtimeNs >= mtimeNs) return;
  const seconds = Number(mtimeNs) / 1e9;
  utimesSync(file, seconds, seconds);
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Compile into a scratch directory; its stamp is written last, so a stamp means a complete build. */
function compile(hash: string, t0Ns: bigint): string | undefined {
  const tmp = path.join(ROOT, `.dist-tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const tsc = createRequire(SCRIPT).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', tmp], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`tsc failed (${r.error?.message ?? `exit ${r.status ?? r.signal ?? '?'}`})`);
  }
  // tsc read the sources some time after they were hashed: a build of anything else is discarded.
  if (inputsHash() !== hash) {
    rmSync(tmp, { recursive: true, force: true });
    return undefined;
  }
  writeFileSync(path.join(tmp, STAMP), `${hash}\n`);
  dateStamp(tmp, t0Ns);
  return tmp;
}

/** Point `dist` at `name` by renaming a fresh symlink over it: readers see the old or the new target. */
function swap(name: string): void {
  const link = path.join(ROOT, `.dist-link-${process.pid}`);
  rmSync(link, { force: true });
  symlinkSync(name, link);
  if (lstatOrUndefined(DIST)?.isDirectory() === true) {
    // A plain dist/ (an older build script, or tsc run by hand) cannot be replaced atomically:
    // rename() puts no symlink over a directory. Moved aside, it is gone for a moment, once.
    const aside = path.join(ROOT, `.dist-trash-${process.pid}-plain`);
    renameSync(DIST, aside);
    renameSync(link, DIST);
    rmSync(aside, { recursive: true, force: true });
    return;
  }
  renameSync(link, DIST);
}

/** Version directories named by a live process's command line (bin/gantry passes the resolved path). */
function versionsInUse(): Set<string> {
  const inUse = new Set<string>();
  const prefix = `${realpathSync(ROOT)}/`;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return inUse;
  }
  for (const pid of pids) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // exited meanwhile, or not ours to read
    }
    for (const arg of cmdline.split('\0')) {
      if (!arg.startsWith(prefix)) continue;
      const name = arg.slice(prefix.length).split('/')[0] ?? '';
      if (VERSION.test(name)) inUse.add(name);
    }
  }
  return inUse;
}

/** Under the lock: drop versions nobody can still be loading from, and scratch left by killed builds. */
function collect(current: string): void {
  const entries = readdirSync(ROOT);
  for (const name of entries.filter((n) => SCRATCH.test(n))) rmSync(path.join(ROOT, name), { recursive: true, force: true });
  const versions = entries.filter((n) => VERSION.test(n)).map((name) => ({ name, mtimeMs: statSync(path.join(ROOT, name)).mtimeMs }));
  versions.sort((a, b) => b.mtimeMs - a.mtimeMs);
  const keep = new Set([current, ...versions.slice(0, KEEP).map((v) => v.name), ...versionsInUse()]);
  for (const { name } of versions) {
    if (keep.has(name)) continue;
    // Renamed first, so a version name never stands for a half-deleted directory.
    const trash = path.join(ROOT, `.dist-trash-${process.pid}-${name.slice('.dist-'.length)}`);
    renameSync(path.join(ROOT, name), trash);
    rmSync(trash, { recursive: true, force: true });
  }
}

/** Whether dist/ is a build of the current inputs; if so its stamp is dated now and nothing else is touched. */
function upToDate(): { current: true } | { current: false; hash: string; t0Ns: bigint } {
  const t0Ns = kernelNowNs();
  const hash = inputsHash();
  if (readStamp(DIST) !== hash) return { current: false, hash, t0Ns };
  dateStamp(DIST, t0Ns);
  return { current: true };
}

function buildUnderLock(locked: boolean): void {
  const started = Date.now();
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const state = upToDate();
    if (state.current) return; // another build finished while this one waited for the lock
    const { hash, t0Ns } = state;
    const name = `.dist-${hash.slice(0, 16)}`;
    const version = path.join(ROOT, name);
    if (readStamp(version) === hash) {
      // These inputs were built before (a change undone) and the version is still kept: reuse it,
      // dated now so that clean-up counts it among the newest.
      const now = Date.now() / 1000;
      utimesSync(version, now, now);
      dateStamp(version, t0Ns);
    } else {
      const tmp = compile(hash, t0Ns);
      if (tmp === undefined) {
        log('sources changed during the build; building again');
        continue;
      }
      if (existsSync(version)) {
        // Only a build without the lock (no flock(1)) can have got here first, and with the same
        // inputs; a version directory is never replaced, as a process may be loading from it.
        rmSync(tmp, { recursive: true, force: true });
      } else {
        renameSync(tmp, version);
      }
    }
    swap(name);
    if (locked) collect(name);
    log(`dist -> ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return;
  }
  throw new Error(`sources kept changing during ${ATTEMPTS} builds`);
}

function main(): void {
  if (process.argv.includes(UNDER_LOCK)) {
    buildUnderLock(true);
    return;
  }
  if (upToDate().current) return;
  const r = spawnSync('flock', ['--timeout', String(LOCK_WAIT_S), '--conflict-exit-code', String(LOCK_TIMEOUT_EXIT), LOCK, process.execPath, SCRIPT, UNDER_LOCK], { stdio: 'inherit' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    // No flock(1) (util-linux; e.g. macOS): each build stays safe on its own, but concurrent builds
    // may compile twice, and old versions are left for a build with the lock to remove.
    log('flock(1) not found: building without the lock, old versions kept');
    buildUnderLock(false);
    return;
  }
  if (r.error) throw r.error;
  if (r.status === LOCK_TIMEOUT_EXIT) throw new Error(`another build held ${LOCK} for ${LOCK_WAIT_S} s`);
  process.exitCode = r.status ?? 1;
}

try {
  main();
} catch (e) {
  log(`failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}

