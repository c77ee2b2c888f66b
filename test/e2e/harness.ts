// Shared plumbing for the end-to-end tier: a real Distribution registry as the origin, a counting
// forwarder between Gantry and it (the proof of what went upstream), Gantry in-process, and a TCP
// tap in front of Gantry (the record of what the engine sent). Engines are configured with the
// files in deploy/examples/, templated with the tap's address: the documented snippets are the
// configuration under test.
import { alive } from '../helpers/processes.ts';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { buildImage, buildIndex, pushImage, type BuiltImage, type BuiltIndex } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder, type ForwardedRequest } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { startSupervisedChild, type SupervisedChild } from '../helpers/supervised-child.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { startClientTap, type ClientTap, type TappedRequest } from './client-tap.ts';

/** The address the documented examples use for Gantry; tests replace it with the real one. */
export const PLACEHOLDER = 'gantry.local:5000';
export const EXAMPLES_DIR = fileURLToPath(new URL('../../deploy/examples/', import.meta.url));

/**
 * The images every e2e file pulls. Layers are real tar+gzip, so engines can unpack them. Repos:
 * `test/docker` (Docker v2 schema 2), `test/oci` (OCI manifest), `test/multi` (OCI index,
 * linux/amd64 + linux/arm64; both children share their first layer), `library/e2e-lib` (reached
 * by a single-component name on Docker Hub), `test/example` (pulled as registry.example.com/...).
 */
export const IMAGES = {
  docker: buildImage({ format: 'docker', seed: 'e2e-docker' }),
  oci: buildImage({ format: 'oci', seed: 'e2e-oci' }),
  multi: buildIndex({ format: 'oci', seed: 'e2e-multi', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }] }),
  library: buildImage({ format: 'docker', seed: 'e2e-library' }),
  example: buildImage({ format: 'oci', seed: 'e2e-example' }),
} satisfies Record<string, BuiltImage | BuiltIndex>;

export const REPOS = {
  docker: 'test/docker',
  oci: 'test/oci',
  multi: 'test/multi',
  library: 'library/e2e-lib',
  example: 'test/example',
} as const satisfies Record<keyof typeof IMAGES, string>;

export const TAG = 'v1';

/** The config digest of a single image: the image ID engines report. */
export function configDigest(img: BuiltImage): string {
  const c = img.blobs[0];
  assert.ok(c, 'image has a config blob');
  return c.digest;
}

export function child(index: BuiltIndex, arch: 'amd64' | 'arm64'): BuiltImage {
  const i = arch === 'amd64' ? 0 : 1;
  const c = index.children[i];
  assert.ok(c, `index has a ${arch} child`);
  return c;
}

export type E2eEnv = {
  tmp: string;
  origin: UpstreamRegistry;
  /** Between Gantry and the origin: every request Gantry sent upstream. */
  fwd: CountingForwarder;
  mirror: Mirror;
  /** Between the engine and Gantry: every request the engine sent. */
  tap: ClientTap;
  /** `host:port` the engines are configured with (the tap, which passes bytes to Gantry unchanged). */
  mirrorHost: string;
  stop(): Promise<void>;
};

/**
 * A temp dir and the teardowns of what a test file starts in it, run last-in first-out by stop()
 * (once; also, bounded, when the test process is interrupted). The dir goes last, after unmounting
 * whatever a killed daemon left mounted under it.
 */
export type Scope = {
  tmp: string;
  /** Run fn at stop(), before everything registered earlier. */
  defer(fn: () => Promise<void>): void;
  stop(): Promise<void>;
};

export async function startScope(name: string): Promise<Scope> {
  const tmp = await mkdtemp(join(tmpdir(), `gantry-e2e-${name}-`));
  const cleanups: Array<() => Promise<void>> = [
    async () => {
      await unmountUnder(tmp); // a daemon killed before it could unmount (dockerd bind-mounts its data-root)
      await rm(tmp, { recursive: true, force: true });
    },
  ];
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => (stopping ??= stopAll());
  const stopAll = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    interruptCleanups.delete(stop);
    interruptDirs.delete(tmp);
    if (errors.length > 0) throw new AggregateError(errors, 'e2e environment teardown failed');
  };
  interruptCleanups.add(stop);
  interruptDirs.add(tmp);
  return { tmp, defer: (fn) => void cleanups.push(fn), stop };
}

/**
 * Origin with every image pushed, forwarder, Gantry (docker.io + registry.example.com upstreams), tap.
 * `mirror`: more of Gantry's configuration (e.g. `tls`).
 */
export async function startE2eEnv(name: string, opts: { mirror?: Record<string, unknown> } = {}): Promise<E2eEnv> {
  const scope = await startScope(name);
  const { tmp, stop } = scope;
  try {
    const origin = await startUpstreamRegistry({ storage: 'filesystem' });
    scope.defer(() => origin.stop());
    for (const key of Object.keys(IMAGES) as Array<keyof typeof IMAGES>) await pushImage(origin.url, REPOS[key], TAG, IMAGES[key]);
    const fwd = await startCountingForwarder({ target: origin.url });
    scope.defer(() => fwd.stop());
    const mirror = await startMirror({
      upstreams: [
        { host: 'docker.io', url: fwd.url },
        { host: 'registry.example.com', url: fwd.url },
      ],
      // The default on a machine with 2+ cores: real clients go through serving processes.
      workers: 2,
      ...opts.mirror,
    });
    scope.defer(() => mirror.destroy());
    const tap = await startClientTap({ host: '127.0.0.1', port: mirror.port });
    scope.defer(() => tap.stop());
    return { tmp, origin, fwd, mirror, tap, mirrorHost: tap.host, stop };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}

/**
 * Copy deploy/examples/<rel> to dest with the placeholder replaced by the real mirror address, and
 * each `[from, to]` of `replace` (a path on the host, say) likewise.
 */
export async function renderExample(rel: string, mirrorHost: string, dest: string, replace: ReadonlyArray<readonly [string, string]> = []): Promise<string> {
  const text = await readFile(join(EXAMPLES_DIR, rel), 'utf8');
  let out = text;
  for (const [from, to] of [[PLACEHOLDER, mirrorHost] as const, ...replace]) {
    assert.ok(text.includes(from), `${rel} mentions ${from}`);
    out = out.replaceAll(from, to);
  }
  await mkdir(dirname(dest), { recursive: true });
  await writeFile(dest, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// What went upstream

/** Manifest and blob GETs Gantry sent upstream among `reqs`. */
export function contentGets(reqs: ReadonlyArray<ForwardedRequest>): ForwardedRequest[] {
  return reqs.filter((r) => r.method === 'GET' && /\/(manifests|blobs)\//.test(r.path));
}

/** One line per request, for assertion messages and the behaviour notes. */
export function describeUpstream(reqs: ReadonlyArray<ForwardedRequest>): string {
  return reqs.map((r) => `${r.method} ${r.path} -> ${r.status}`).join('\n');
}

export function describeTap(reqs: ReadonlyArray<TappedRequest>): string {
  return reqs
    .map((r) => (r.kind === 'tls' ? 'TLS ClientHello' : `${r.method} ${r.target}${r.headers['authorization'] !== undefined ? ' [Authorization]' : ''}`))
    .join('\n');
}

/** Credentials an engine is given for docker.io (the origin has no auth: they are never needed). */
export const CREDS = { username: 'e2e-user', password: 'e2e-secret' } as const;
/** Credentials an engine is given for the mirror's own address, where it has a place for them. */
export const MIRROR_CREDS = { username: 'mirror-user', password: 'mirror-secret' } as const;

type Creds = { username: string; password: string };
const basicOf = (c: Creds): string => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;

/**
 * A summary of what an engine did with the credentials it was given (labelled, e.g. "docker.io"):
 * which requests to Gantry carried Authorization, which Basic credential or other scheme, and
 * whether any of those Basic credentials went on to the upstream.
 */
export function describeCredentialUse(sent: ReadonlyArray<TappedRequest>, upstream: ReadonlyArray<ForwardedRequest>, given: Record<string, Creds>): string {
  const byHeader = new Map(Object.entries(given).map(([label, c]) => [basicOf(c), label]));
  const lines: string[] = [];
  const http = sent.filter((r): r is Extract<TappedRequest, { kind: 'http' }> => r.kind === 'http');
  for (const r of http) {
    const a = r.headers['authorization'];
    const label = a === undefined ? undefined : byHeader.get(a);
    const what = a === undefined ? 'no Authorization' : label !== undefined ? `Basic <the ${label} credentials>` : `${a.split(' ')[0] ?? '?'} <other>`;
    lines.push(`${r.method} ${r.target}: ${what}`);
  }
  if (http.length === 0) lines.push('(nothing sent)');
  const leaked = upstream.filter((r) => byHeader.has(String(r.headers['authorization'] ?? ''))).map((r) => `${r.method} ${r.path}`);
  lines.push(`upstream requests carrying one of those Basic credentials: ${leaked.length === 0 ? 'none' : leaked.join(', ')}`);
  return lines.join('\n');
}

/** What one pull asked for: an image, or an index and the platforms taken from it. */
export type Pulled = { repo: string; image: BuiltImage | BuiltIndex; arches?: Array<'amd64' | 'arm64'> };

/** The single images a pull ends up with: the image itself, or the chosen children of an index. */
export function pulledImages(p: Pulled): BuiltImage[] {
  const img = p.image;
  return 'children' in img ? (p.arches ?? ['amd64', 'arm64']).map((a) => child(img, a)) : [img];
}

/** Unique blob digests (configs and layers) a pull needs. */
export function pulledBlobs(p: Pulled): string[] {
  return [...new Set(pulledImages(p).flatMap((i) => i.blobs.map((b) => b.digest)))];
}

const CONTENT_PATH = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)/;

/**
 * Every object the pulls needed went upstream exactly once, and nothing else did: each blob GET
 * once, each top-level manifest GET once (by tag or by digest, as the engine asked), each child
 * manifest of the chosen platforms GET once by digest.
 */
export function assertFetchedOnce(reqs: ReadonlyArray<ForwardedRequest>, pulls: Pulled[]): void {
  const gets = contentGets(reqs).flatMap((r) => {
    const m = CONTENT_PATH.exec(r.path);
    return m ? [{ repo: m[1] ?? '', kind: m[2] ?? '', ref: m[3] ?? '' }] : [];
  });
  const blobs = new Set(pulls.flatMap((p) => pulledBlobs(p).map((d) => `${p.repo}@${d}`)));
  const tops = new Map<string, { repo: string; digest: string }>();
  const children = new Set<string>();
  for (const p of pulls) {
    tops.set(`${p.repo}@${p.image.manifestDigest}`, { repo: p.repo, digest: p.image.manifestDigest });
    for (const img of pulledImages(p)) if (img !== p.image) children.add(`${p.repo}@${img.manifestDigest}`);
  }
  const all = describeUpstream(reqs);
  const blobGets = gets.filter((g) => g.kind === 'blobs').map((g) => `${g.repo}@${g.ref}`);
  assert.deepEqual([...blobGets].sort(), [...blobs].sort(), `each needed blob fetched upstream exactly once, nothing else:\n${all}`);
  const manifestGets = gets.filter((g) => g.kind === 'manifests');
  for (const { repo, digest } of tops.values()) {
    const n = manifestGets.filter((g) => g.repo === repo && (g.ref === TAG || g.ref === digest)).length;
    assert.equal(n, 1, `${repo}:${TAG} (${digest}) fetched upstream once:\n${all}`);
  }
  for (const key of children) {
    const n = manifestGets.filter((g) => `${g.repo}@${g.ref}` === key).length;
    assert.equal(n, 1, `child manifest ${key} fetched upstream once:\n${all}`);
  }
  assert.equal(manifestGets.length, tops.size + children.size, `no other manifest fetched upstream:\n${all}`);
}

/** The second round: no manifest or blob was downloaded upstream (revalidating HEADs are allowed). */
export function assertNothingFetched(reqs: ReadonlyArray<ForwardedRequest>): void {
  assert.deepEqual(contentGets(reqs).map((r) => `${r.method} ${r.path}`), [], `no manifest or blob GET upstream:\n${describeUpstream(reqs)}`);
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Teardowns of environments still up, run (bounded) when the test process is interrupted. */
const interruptCleanups = new Set<() => Promise<void>>();
/** Their temp dirs: removed once more at the very end, as tests go on running during the teardown. */
const interruptDirs = new Set<string>();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killLiveGroups();
    const all = Promise.allSettled([...interruptCleanups].map((fn) => fn()));
    void Promise.race([all, sleep(10_000)]).finally(() => {
      for (const dir of interruptDirs) {
        try {
          rmSync(dir, { recursive: true, force: true });
        } catch {
          // still busy: nothing more to do
        }
      }
      process.kill(process.pid, signal); // the default action now: terminate
    });
  });
}

/** Unmount (lazily, deepest first) whatever is mounted at or below dir. */
async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = info
    .split('\n')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { timeoutMs: 10_000, allowFailure: true });
}

export type RunResult = { stdout: string; stderr: string };

/**
 * Run a command to completion in its own process group; on timeout the whole group is killed.
 * Rejects with the command, exit status and output on failure.
 */
export function run(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; allowFailure?: boolean } = {}): Promise<RunResult & { code: number | null }> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const proc = spawn(file, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    proc.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(proc.pid, 'SIGKILL');
    }, timeoutMs);
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      const cmd = [file, ...args].join(' ');
      if (timedOut) reject(new Error(`${cmd}: timed out after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
      else if (code !== 0 && !opts.allowFailure) reject(new Error(`${cmd}: exit ${code ?? signal}\nstdout: ${stdout}\nstderr: ${stderr}`));
      else resolve({ stdout, stderr, code });
    });
  });
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}


/** Pids of processes whose command line mentions `marker` (our own temp dir), other than us. */
async function pidsMentioning(marker: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'latin1');
      if (cmdline.includes(marker)) out.push(pid);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

export type Daemon = {
  pid: number;
  logFile: string;
  log(): Promise<string>;
  stop(): Promise<void>;
};

/** Process groups of daemons still running: killed if this process exits or is told to stop without stopping them. */
const liveGroups = new Set<number>();
const killLiveGroups = (): void => {
  for (const pid of liveGroups) killGroup(pid, 'SIGKILL');
  liveGroups.clear();
};
process.once('exit', killLiveGroups);

/**
 * Start a long-running engine daemon in its own process group, output to logFile, and wait
 * (bounded) for ready() to hold. stop(): SIGTERM to the daemon (so it can stop its own children),
 * SIGKILL to its group after graceMs, then SIGKILL, by pid, to any straggler whose command line
 * mentions `marker` (a directory only this test uses).
 */
export async function startDaemon(opts: {
  file: string;
  args: string[];
  logFile: string;
  marker: string;
  ready: () => Promise<boolean>;
  readyTimeoutMs?: number;
  graceMs?: number;
  env?: NodeJS.ProcessEnv;
}): Promise<Daemon> {
  let spawned: number | undefined;
  const killStragglers = async (): Promise<void> => {
    if (spawned !== undefined) liveGroups.delete(spawned);
    await killMentioning(opts.marker);
  };
  let proc: SupervisedChild;
  try {
    proc = await startSupervisedChild({
      name: opts.file,
      command: opts.file,
      args: opts.args,
      ...(opts.env ? { env: opts.env } : {}),
      logFile: opts.logFile,
      group: true,
      onSpawn: (pid) => {
        spawned = pid;
        liveGroups.add(pid);
      },
      ready: opts.ready,
      readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
      pollMs: 100,
      graceMs: opts.graceMs ?? 15_000,
    });
  } catch (err) {
    await killStragglers().catch(() => {});
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    pid: proc.pid,
    logFile: opts.logFile,
    log: proc.output,
    stop: () =>
      (stopping ??= (async () => {
        try {
          await proc.stop();
        } finally {
          await killStragglers();
        }
      })()),
  };
}

/** SIGKILL, by pid, every process whose command line mentions `marker`, until none is left (bounded). */
async function killMentioning(marker: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = (await pidsMentioning(marker)).filter(alive);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes still running after SIGKILL: ${left.join(', ')}`);
    for (const p of left) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await sleep(100);
  }
}
