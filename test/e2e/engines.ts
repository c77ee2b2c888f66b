// The container engines of the e2e tier, each started or run privately under a test's own temp
// dir, so nothing on the host (its daemons, images, configuration, iptables) is touched:
// - dockerd: own data-root, exec-root, socket; vfs; no bridge, no iptables;
// - containerd: own root, state and socket; CRI plugin off; driven with `ctr`;
// - podman: own --root/--runroot, vfs, own containers.conf and storage.conf;
// - skopeo: nothing to start.
import http from 'node:http';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, startDaemon, type Daemon, type RunResult } from './harness.ts';

export const DOCKERD = '/usr/sbin/dockerd';
// The CLI from the same package: a newer docker CLI elsewhere on PATH would do too, but this one
// is the one the package (and scripts/ensure-system-deps.sh) guarantees.
export const DOCKER = '/usr/bin/docker';
export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';
export const PODMAN = '/usr/bin/podman';
export const SKOPEO = '/usr/bin/skopeo';

export type RunOpts = { env?: NodeJS.ProcessEnv; allowFailure?: boolean; timeoutMs?: number };
type Ran = RunResult & { code: number | null };

function runOpts(opts: RunOpts, env: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; timeoutMs: number; allowFailure?: boolean } {
  return { env: opts.env ?? env, timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.allowFailure ? { allowFailure: true } : {}) };
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/_ping', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
}

export type Dockerd = {
  daemon: Daemon;
  sock: string;
  /** A client config dir with no credentials (`config.json` is `{}`). */
  noCredsConfig: string;
  /** The docker CLI against this daemon, with `--config <config>` (default: noCredsConfig). */
  docker(args: string[], opts?: RunOpts & { config?: string }): Promise<Ran>;
};

/**
 * A private dockerd in `dir` with `configFile` as its daemon.json. `env` is the daemon's
 * environment (e.g. HTTPS_PROXY); `marker` is a directory only this test uses.
 */
export async function startDockerd(opts: { dir: string; configFile: string; marker: string; env?: NodeJS.ProcessEnv }): Promise<Dockerd> {
  const { dir } = opts;
  await mkdir(dir, { recursive: true });
  const noCredsConfig = join(dir, 'client');
  await mkdir(noCredsConfig, { recursive: true });
  await writeFile(join(noCredsConfig, 'config.json'), '{}\n');
  const sock = join(dir, 'docker.sock');
  const daemon = await startDaemon({
    file: DOCKERD,
    args: [
      '--config-file', opts.configFile,
      '--data-root', join(dir, 'data'),
      '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'dockerd.pid'),
      '--host', `unix://${sock}`,
      '--storage-driver', 'vfs',
      // No networking of its own: the host's iptables, bridges and forwarding stay untouched.
      '--bridge', 'none',
      '--iptables=false',
      '--ip6tables=false',
      '--ip-forward=false',
      '--ip-masq=false',
    ],
    logFile: join(dir, 'dockerd.log'),
    marker: opts.marker,
    ready: () => ping(sock),
    readyTimeoutMs: 60_000,
    ...(opts.env ? { env: opts.env } : {}),
  });
  return {
    daemon,
    sock,
    noCredsConfig,
    docker: (args, o = {}) => run(DOCKER, ['--config', o.config ?? noCredsConfig, '-H', `unix://${sock}`, ...args], runOpts(o, process.env)),
  };
}

export type Containerd = {
  daemon: Daemon;
  sock: string;
  /** `ctr --address <sock> --namespace <namespace> ...`; `env` is ctr's (it fetches images itself). */
  ctr(args: string[], opts?: RunOpts): Promise<Ran>;
};

/** A private containerd in `dir` (CRI plugin off). */
export async function startContainerd(opts: { dir: string; marker: string; namespace: string }): Promise<Containerd> {
  const { dir } = opts;
  const sock = join(dir, 'containerd.sock');
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${JSON.stringify(sock)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(`${sock}.ttrpc`)}`,
    '[debug]',
    '  address = ""',
    '',
  ].join('\n');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.toml'), config);
  const daemon = await startDaemon({
    file: CONTAINERD,
    args: ['--config', join(dir, 'config.toml')],
    logFile: join(dir, 'containerd.log'),
    marker: opts.marker,
    ready: async () => (await run(CTR, ['--address', sock, 'version'], { timeoutMs: 5_000, allowFailure: true })).code === 0,
    readyTimeoutMs: 30_000,
  });
  return {
    daemon,
    sock,
    ctr: (args, o = {}) => run(CTR, ['--address', sock, '--namespace', opts.namespace, ...args], runOpts(o, process.env)),
  };
}

export type Podman = {
  /** The environment podman runs with unless told otherwise: our registries.conf, containers.conf, storage.conf, auth file. */
  env: NodeJS.ProcessEnv;
  podman(args: string[], opts?: RunOpts): Promise<Ran>;
};

/**
 * podman with private storage in `dir`, configured by `registriesConf` and, for credentials,
 * `authFile` (REGISTRY_AUTH_FILE). `extraEnv` is added to its environment.
 */
export async function preparePodman(opts: { dir: string; registriesConf: string; authFile: string; extraEnv?: NodeJS.ProcessEnv }): Promise<Podman> {
  const { dir } = opts;
  // podman 4 refuses a runroot longer than 50 characters (keep temp dir names short).
  const runroot = join(dir, 'runroot');
  if (runroot.length > 50) throw new Error(`podman runroot ${runroot} is longer than 50 characters`);
  await mkdir(join(dir, 'tmp'), { recursive: true });
  // Our own containers.conf (empty) and storage.conf: the host's must not change what is tested.
  await writeFile(join(dir, 'containers.conf'), '');
  await writeFile(
    join(dir, 'storage.conf'),
    `[storage]\ndriver = "vfs"\ngraphroot = ${JSON.stringify(join(dir, 'root'))}\nrunroot = ${JSON.stringify(runroot)}\n`,
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...opts.extraEnv,
    CONTAINERS_REGISTRIES_CONF: opts.registriesConf,
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    REGISTRY_AUTH_FILE: opts.authFile,
  };
  return {
    env,
    podman: (args, o = {}) =>
      run(
        PODMAN,
        [
          '--root', join(dir, 'root'),
          '--runroot', runroot,
          '--tmpdir', join(dir, 'tmp'),
          '--network-config-dir', join(dir, 'networks'),
          '--volumepath', join(dir, 'volumes'),
          '--storage-driver', 'vfs',
          '--cgroup-manager', 'cgroupfs',
          '--events-backend', 'none',
          ...args,
        ],
        runOpts(o, env),
      ),
  };
}
