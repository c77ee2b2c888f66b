// Issue 12's acceptance, end to end: an edge node that serves without its uplink.
// Node A is the harness's Gantry in front of a real docker-registry; the README's "USB workflow"
// commands (run as written: `gantry` is bin/gantry, /media/usb a temp dir, each node's config in
// GANTRY_CONFIG) export the harness's Docker v2 image, OCI image and multi-arch index (and one
// image of another registry, registry.example.com) through it, and import the file into node B,
// a second Gantry process with a fresh cache whose every upstream is a socket that counts
// connections and resets them. Archives written by the real tools (skopeo's oci-archive,
// dockerd 20.10's legacy `docker save` of two images, one layer linked) are imported into node B
// while it runs. Then dockerd (registry-mirrors), containerd (hosts.toml), podman
// (registries.conf) and skopeo pull everything from node B, configured with deploy/examples/:
// every digest is the registry's (or, for the legacy save, the one `gantry import` printed), and
// node B never opened a connection upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, makeLayer, pushImage, sha256, type BuiltImage, type BuiltIndex } from '../fixtures/images.ts';
import { startGantryProcess, type GantryProcess } from '../helpers/gantry-process.ts';
import { closeWithin, listenOnLoopback } from '../helpers/loopback.ts';
import { CONTAINERD, CTR, DOCKER, DOCKERD, PODMAN, SKOPEO, preparePodman, startContainerd, startDockerd, type Containerd, type Dockerd, type Podman } from './engines.ts';
import { child, configDigest, contentGets, describeUpstream, IMAGES, renderExample, REPOS, run, startE2eEnv, TAG, type E2eEnv } from './harness.ts';
import { requireE2eHost } from './host.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const GANTRY = join(ROOT, 'bin', 'gantry');
const README = join(ROOT, 'README.md');

/**
 * What node B serves, and what a client must get for it: the registry's manifest (and, for an
 * image, its config). `registry`: the upstream it is served under when not Docker Hub.
 */
type Served = { repo: string; image: BuiltImage | BuiltIndex; registry?: string };

/**
 * The three images of the issue, plus one from another registry in the same file: node A exports
 * them, node B imports the file (README USB workflow).
 */
const EXPORTED: Served[] = [
  { repo: REPOS.docker, image: IMAGES.docker },
  { repo: REPOS.oci, image: IMAGES.oci },
  { repo: REPOS.multi, image: IMAGES.multi },
  { repo: REPOS.example, image: IMAGES.example, registry: 'registry.example.com' },
];
/** Written by `skopeo copy docker://<registry>/... oci-archive:...`, imported into the running node B. */
const FROM_SKOPEO: Served[] = [
  { repo: 'edge/skopeo-oci', image: IMAGES.oci },
  { repo: 'edge/skopeo-multi', image: IMAGES.multi },
];
const ALL = [...EXPORTED, ...FROM_SKOPEO];
/** What dockerd and podman (configured as deploy/examples/ has them) can pull: Docker Hub names. */
const HUB = ALL.filter((s) => s.registry === undefined);

/** `REPO:TAG` as `gantry import` prints it: the upstream first when the image's name chose a non-default one. */
const printedName = (s: Served): string => `${s.registry !== undefined ? `${s.registry}/` : ''}${s.repo}:${TAG}`;

/**
 * A listening socket that counts every connection and resets it at once: node B's only
 * upstream. Listening (rather than a closed port) is what lets the test prove none was made.
 */
type DeadUpstream = { url: string; connections(): number; stop(): Promise<void> };

async function startDeadUpstream(): Promise<DeadUpstream> {
  let count = 0;
  const server = net.createServer((socket) => {
    count++;
    socket.resetAndDestroy();
  });
  const port = await listenOnLoopback(server);
  return { url: `http://127.0.0.1:${port}`, connections: () => count, stop: () => closeWithin(server, 'dead upstream', () => undefined) };
}

/** The test's environment without any GANTRY_* variable of the shell that runs it. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GANTRY_')) env[k] = v;
  return { ...env, GANTRY_NODE: process.execPath, ...extra };
}

/**
 * The README's USB workflow block: the two commands after "**USB workflow.**", as argv. Words
 * only (no quoting in the block), `gantry` is bin/gantry and /media/usb is `usb`.
 */
async function usbWorkflow(usb: string): Promise<{ connected: string[]; edge: string[] }> {
  const text = await readFile(README, 'utf8');
  const at = text.indexOf('**USB workflow.**');
  assert.ok(at >= 0, 'README has the USB workflow paragraph');
  const block = /```sh\n([\s\S]*?)```/.exec(text.slice(at));
  assert.ok(block?.[1], 'the USB workflow paragraph has a ```sh block');
  const commands = block[1]
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(/\s+/).map((w) => w.replaceAll('/media/usb', usb)));
  assert.equal(commands.length, 2, `two commands in the USB workflow block: ${JSON.stringify(commands)}`);
  const [connected, edge] = commands.map((c) => {
    assert.equal(c[0], 'gantry', `the block runs gantry: ${c.join(' ')}`);
    return [GANTRY, ...c.slice(1)];
  });
  assert.ok(connected && edge);
  assert.equal(connected[1], 'export');
  assert.equal(edge[1], 'import');
  return { connected, edge };
}

/** `imported REPO:TAG DIGEST...` lines of `gantry import`'s output. */
function importedLines(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of stdout.matchAll(/^imported (\S+) (sha256:[0-9a-f]{64})/gm)) if (m[1] && m[2]) out.set(m[1], m[2]);
  return out;
}

function isIndex(img: BuiltImage | BuiltIndex): img is BuiltIndex {
  return 'children' in img;
}

describe('an edge node that works without its uplink (issue 12)', { timeout: 600_000 }, () => {
  let env: E2eEnv;
  let dead: DeadUpstream;
  let nodeB: GantryProcess | undefined;
  let nodeBHost = '';
  let usb = '';
  let nodeAConfig = '';
  let nodeBConfig = '';
  let dockerd: Dockerd | undefined;
  let containerd: Containerd | undefined;
  const stops: Array<() => Promise<void>> = [];

  before(async () => {
    requireE2eHost(DOCKERD, DOCKER, CONTAINERD, CTR, PODMAN, SKOPEO);
    env = await startE2eEnv('edge');
    dead = await startDeadUpstream();
    usb = join(env.tmp, 'usb');
    await mkdir(usb);
    // Node A's configuration, as its running Gantry has it (the harness's in-process mirror).
    nodeAConfig = join(env.tmp, 'node-a.yaml');
    await writeFile(
      nodeAConfig,
      JSON.stringify({
        listen: `127.0.0.1:${env.mirror.port}`,
        cacheDir: env.mirror.cacheDir,
        upstreams: [
          { host: 'docker.io', url: env.fwd.url },
          { host: 'registry.example.com', url: env.fwd.url },
        ],
      }),
    );
    // Node B: a fresh cache; both upstreams are the dead socket. Tags are trusted for a day: with
    // no uplink to revalidate against, a HEAD past the default 300 s would be a connection, and
    // this file may run that long on a loaded machine.
    nodeBConfig = join(env.tmp, 'node-b.yaml');
    await writeFile(
      nodeBConfig,
      JSON.stringify({
        cacheDir: join(env.tmp, 'node-b-cache'),
        tagTtlSeconds: 86_400,
        logLevel: 'warn',
        upstreams: [
          { host: 'docker.io', url: dead.url },
          { host: 'registry.example.com', url: dead.url },
        ],
      }),
    );
  });

  after(async () => {
    const errors: unknown[] = [];
    for (const fn of [...stops].reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    await nodeB?.kill('SIGTERM').catch((err: unknown) => errors.push(err));
    await dead?.stop().catch((err: unknown) => errors.push(err));
    await env?.stop().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw new AggregateError(errors, 'edge-site teardown failed');
  });

  const gantry = (args: string[], config: string, extra: Record<string, string> = {}) =>
    run(args[0] ?? GANTRY, args.slice(1), { env: cleanEnv({ GANTRY_CONFIG: config, GANTRY_LOG_LEVEL: 'warn', ...extra }), timeoutMs: 120_000 });

  const assertNoUpstreamConnection = (): void => assert.equal(dead.connections(), 0, 'node B opened no connection to any upstream');

  const started = (): { host: string } => {
    assert.ok(nodeB, 'node B running (see the import test)');
    return { host: nodeBHost };
  };

  /** One dockerd for the file, with deploy/examples/daemon.json pointing at node B. */
  const startedDockerd = async (): Promise<Dockerd> => {
    if (dockerd) return dockerd;
    const dir = join(env.tmp, 'dockerd');
    await mkdir(dir, { recursive: true });
    await renderExample('daemon.json', started().host, join(dir, 'daemon.json'));
    const d = await startDockerd({ dir, configFile: join(dir, 'daemon.json'), marker: env.tmp });
    stops.push(() => d.daemon.stop());
    dockerd = d;
    return d;
  };

  const hostsDir = (): string => join(env.tmp, 'containerd', 'certs.d');
  /** One containerd for the file; ctr is given deploy/examples/containerd/*\/hosts.toml pointing at node B. */
  const startedContainerd = async (): Promise<Containerd> => {
    if (containerd) return containerd;
    for (const host of ['docker.io', 'registry.example.com']) await renderExample(`containerd/${host}/hosts.toml`, started().host, join(hostsDir(), host, 'hosts.toml'));
    const c = await startContainerd({ dir: join(env.tmp, 'containerd'), marker: env.tmp, namespace: 'gantry-edge' });
    stops.push(() => c.daemon.stop());
    containerd = c;
    return c;
  };
  const ctrPull = (c: Containerd, ref: string, extra: string[] = []) => c.ctr(['images', 'pull', '--snapshotter', 'native', '--hosts-dir', hostsDir(), ...extra, ref]);
  const ctrDigest = async (c: Containerd, ref: string): Promise<string | undefined> => {
    for (const line of (await c.ctr(['images', 'ls'])).stdout.split('\n').slice(1)) {
      const [r, , digest] = line.trim().split(/\s+/);
      if (r === ref) return digest;
    }
    return undefined;
  };

  test('connected node: the README\'s `gantry export ... --fetch` pulls the issue\'s three images and another registry\'s one through Gantry into one file', async () => {
    const { connected } = await usbWorkflow(usb);
    const since = env.fwd.requests.length;
    const r = await gantry(connected, nodeAConfig);
    assert.match(r.stderr, new RegExp(`exported ${EXPORTED.length} image\\(s\\)`), r.stderr);
    assert.ok((await stat(join(usb, 'images.tar'))).size > 0);
    const upstream = env.fwd.requests.slice(since);
    for (const s of EXPORTED) {
      assert.ok(
        contentGets(upstream).some((q) => q.path.startsWith(`/v2/${s.repo}/manifests/`)),
        `${s.repo}:${TAG} came from the registry through node A:\n${describeUpstream(upstream)}`,
      );
    }
  });

  test('edge site: the README\'s `gantry import` into node B\'s stopped cache, then node B starts', async () => {
    const { edge } = await usbWorkflow(usb);
    const r = await gantry(edge, nodeBConfig);
    const lines = importedLines(r.stdout);
    for (const s of EXPORTED) assert.equal(lines.get(printedName(s)), s.image.manifestDigest, `${printedName(s)} imported with the registry's digest:\n${r.stdout}`);
    assert.doesNotMatch(r.stderr, /running Gantry/, 'imported offline, not through a server');
    nodeB = await startGantryProcess({ GANTRY_CONFIG: nodeBConfig });
    nodeBHost = new URL(nodeB.url).host;
    assertNoUpstreamConnection();
  });

  test('skopeo\'s oci-archive of the registry\'s images imports into the running node B', async () => {
    started();
    const ociTar = join(env.tmp, 'skopeo-oci.tar');
    const multiTar = join(env.tmp, 'skopeo-multi.tar');
    // A bare tag (needs --repository) and a full name (lands where it says); --all keeps the index.
    await run(SKOPEO, ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${env.origin.host}/${REPOS.oci}:${TAG}`, `oci-archive:${ociTar}:${TAG}`]);
    await run(SKOPEO, ['--insecure-policy', 'copy', '--all', '--src-tls-verify=false', `docker://${env.origin.host}/${REPOS.multi}:${TAG}`, `oci-archive:${multiTar}:docker.io/edge/skopeo-multi:${TAG}`]);
    const r = await gantry([GANTRY, 'import', '--repository', 'edge/skopeo-oci', ociTar, multiTar], nodeBConfig, { GANTRY_LISTEN: nodeBHost });
    assert.match(r.stderr, /importing through the running Gantry/, r.stderr);
    const lines = importedLines(r.stdout);
    for (const s of FROM_SKOPEO) assert.equal(lines.get(`${s.repo}:${TAG}`), s.image.manifestDigest, `${s.repo}:${TAG}: the registry's digest:\n${r.stdout}`);
    assertNoUpstreamConnection();
  });

  test('dockerd 20.10\'s legacy `docker save` of two images imports into node B; each tag serves the digest `gantry import` printed', async () => {
    started();
    const d = await startedDockerd();
    // A second image with test/docker's top layer over another base: dockerd 20.10 saves that
    // layer once and links the other copy to it (a symlink entry in the tar).
    const top = IMAGES.docker.blobs[2];
    assert.ok(top, 'test/docker has two layers');
    const linked = buildImage({ format: 'docker', seed: 'edge-linked', layers: [makeLayer({ 'etc/linked': 'another base\n' }), top.bytes] });
    await pushImage(env.origin.url, 'edge/linked', TAG, linked);
    const saves: Array<{ repo: string; image: BuiltImage }> = [
      { repo: REPOS.docker, image: IMAGES.docker },
      { repo: 'edge/linked', image: linked },
    ];
    // Pulled from the registry itself (127.0.0.0/8 is insecure by default), as a connected machine would.
    const sources = saves.map((x) => `${env.origin.host}/${x.repo}:${TAG}`);
    for (const src of sources) await d.docker(['pull', '--quiet', src]);
    const saved = join(env.tmp, 'docker-save.tar');
    await d.docker(['save', '-o', saved, ...sources]);
    const listing = (await run('tar', ['-tvf', saved])).stdout;
    assert.match(listing, /^l.* -> \.\.\/[0-9a-f]{64}\/layer\.tar$/m, `dockerd linked the shared layer:\n${listing}`);

    // Its RepoTags name the registry's host, which is no upstream of node B: --upstream says which.
    const r = await gantry([GANTRY, 'import', '--upstream', 'registry.example.com', saved], nodeBConfig, { GANTRY_LISTEN: nodeBHost });
    const c = await startedContainerd();
    for (const x of saves) {
      const m = new RegExp(`^imported ${x.repo}:${TAG} (sha256:[0-9a-f]{64}) \\(manifest built by Gantry`, 'm').exec(r.stdout);
      assert.ok(m?.[1], `${x.repo}: a built manifest's digest is printed:\n${r.stdout}`);
      const printed = m[1];
      assert.notEqual(printed, x.image.manifestDigest, `${x.repo}: Gantry's own manifest, not the registry's`);
      // By tag, through the path prefix (skopeo) and ?ns= (ctr): the printed digest over the image's own config.
      const raw = await run(SKOPEO, ['inspect', '--raw', '--tls-verify=false', `docker://${nodeBHost}/registry.example.com/${x.repo}:${TAG}`]);
      assert.equal(sha256(Buffer.from(raw.stdout)), printed, `skopeo ${x.repo}: the manifest served for the tag is the printed one`);
      assert.equal((JSON.parse(raw.stdout) as { config: { digest: string } }).config.digest, configDigest(x.image), `${x.repo}: the image's own config`);
      const ref = `registry.example.com/${x.repo}:${TAG}`;
      await ctrPull(c, ref);
      assert.equal(await ctrDigest(c, ref), printed, `ctr ${ref}: the image digest is the printed one`);
    }
    assertNoUpstreamConnection();
  });

  test('docker pull through registry-mirrors: every Docker Hub image from node B, with the registry\'s digests', async () => {
    const d = await startedDockerd();
    for (const s of HUB) {
      const name = s.repo.replace(/^library\//, '');
      await d.docker(['pull', '--quiet', `${name}:${TAG}`]);
      const [img] = JSON.parse((await d.docker(['image', 'inspect', `${name}:${TAG}`])).stdout) as Array<{ Id: string; RepoDigests: string[] | null }>;
      const expectedImage = isIndex(s.image) ? child(s.image, 'amd64') : s.image;
      assert.equal(img?.Id, configDigest(expectedImage), `${name}:${TAG}: image ID is the config digest`);
      assert.ok(img.RepoDigests?.includes(`${name}@${s.image.manifestDigest}`), `${name}:${TAG}: RepoDigests ${JSON.stringify(img.RepoDigests)}`);
    }
    assertNoUpstreamConnection();
  });

  test('ctr image pull through hosts.toml: every image (all platforms) from node B, with the registry\'s digests', async () => {
    const c = await startedContainerd();
    for (const s of ALL) {
      const ref = `${s.registry ?? 'docker.io'}/${s.repo}:${TAG}`;
      await ctrPull(c, ref, isIndex(s.image) ? ['--all-platforms'] : []);
      assert.equal(await ctrDigest(c, ref), s.image.manifestDigest, ref);
    }
    assertNoUpstreamConnection();
  });

  test('podman pull through registries.conf: every Docker Hub image from node B, with the registry\'s digests', async () => {
    const dir = join(env.tmp, 'podman');
    await mkdir(dir, { recursive: true });
    const registriesConf = join(dir, 'registries.conf');
    await renderExample('registries.conf', started().host, registriesConf);
    await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n');
    const p: Podman = await preparePodman({ dir, registriesConf, authFile: join(dir, 'no-auth.json') });
    try {
      for (const s of HUB) {
        const ref = `docker.io/${s.repo}:${TAG}`;
        await p.podman(['pull', '--quiet', ref]);
        const [img] = JSON.parse((await p.podman(['image', 'inspect', ref])).stdout) as Array<{ Id: string; Digest: string }>;
        const expectedImage = isIndex(s.image) ? child(s.image, 'amd64') : s.image;
        assert.equal(`sha256:${img?.Id ?? ''}`, configDigest(expectedImage), `${ref}: image ID is the config digest`);
        assert.equal(img?.Digest, s.image.manifestDigest, `${ref}: digest`);
      }
    } finally {
      await p.podman(['rmi', '--all', '--force'], { allowFailure: true }).catch(() => {});
    }
    assertNoUpstreamConnection();
  });

  test('skopeo copy from node B: every image byte for byte (indexes with --all)', async () => {
    const { host } = started();
    for (const s of ALL) {
      const dest = await mkdtemp(join(env.tmp, 'skopeo-'));
      const all = isIndex(s.image) ? ['--all'] : [];
      // Another registry's image through Gantry's path prefix, /v2/<registry>/<repository>/...
      const path = `${s.registry !== undefined ? `${s.registry}/` : ''}${s.repo}`;
      await run(SKOPEO, ['--insecure-policy', 'copy', '--src-tls-verify=false', ...all, `docker://${host}/${path}:${TAG}`, `dir:${dest}`]);
      assert.ok((await readFile(join(dest, 'manifest.json'))).equals(s.image.manifest), `${s.repo}:${TAG}: the registry's manifest (${s.image.manifestDigest})`);
      if (isIndex(s.image)) {
        for (const c of s.image.children) assert.ok((await readFile(join(dest, `${c.manifestDigest.slice(7)}.manifest.json`))).equals(c.manifest), `${s.repo}: child ${c.manifestDigest}`);
      }
    }
    assertNoUpstreamConnection();
  });

  test('the count is live: an image node B was never given sends it to its upstream, which it cannot reach', async () => {
    const { host } = started();
    // test/example was imported under registry.example.com only: as a Docker Hub name it is a miss.
    const r = await run(SKOPEO, ['inspect', '--raw', '--tls-verify=false', `docker://${host}/${REPOS.example}:${TAG}`], { allowFailure: true });
    assert.notEqual(r.code, 0, 'not cached, upstream unreachable: the pull fails');
    assert.ok(dead.connections() > 0, 'node B tried its upstream: the counter sees what it would have to');
  });
});
