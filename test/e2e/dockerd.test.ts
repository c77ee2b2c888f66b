// dockerd pulls through Gantry configured with deploy/examples/daemon.json (`registry-mirrors`).
// A private dockerd (own data-root, exec-root, socket; vfs; no bridge, no iptables) whose only way
// to Docker Hub is the mirror: its fallback, registry-1.docker.io, is unreachable here, so every
// successful pull was served by Gantry.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DOCKER, DOCKERD, startDockerd, type Dockerd } from './engines.ts';
import {
  assertFetchedOnce, assertInstalled, CREDS, describeCredentialUse, assertNothingFetched, child, configDigest, describeTap, IMAGES, pulledBlobs, renderExample, REPOS,
  skipUnlessRoot, startE2eEnv, TAG, type E2eEnv, type Pulled,
} from './harness.ts';

type Inspect = { Id: string; RepoDigests: string[] | null; Architecture: string; Os: string };

let env: E2eEnv;
let dockerd: Dockerd;

function docker(args: string[], opts: { allowFailure?: boolean; config?: string } = {}) {
  return dockerd.docker(args, opts);
}

async function inspect(ref: string): Promise<Inspect> {
  const { stdout } = await docker(['image', 'inspect', ref]);
  const [first] = JSON.parse(stdout) as Inspect[];
  assert.ok(first, `docker image inspect ${ref}`);
  return first;
}

/** What `docker pull` is given, and what it must end up with. */
const PULLS: Array<{ args: string[]; ref: string; id: string; arch: string; repoDigest?: string; pulled: Pulled }> = [
  { args: [`test/docker:${TAG}`], ref: `test/docker:${TAG}`, id: configDigest(IMAGES.docker), arch: 'amd64', repoDigest: `test/docker@${IMAGES.docker.manifestDigest}`, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { args: [`test/oci:${TAG}`], ref: `test/oci:${TAG}`, id: configDigest(IMAGES.oci), arch: 'amd64', repoDigest: `test/oci@${IMAGES.oci.manifestDigest}`, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  // A single-component name: dockerd asks the mirror for library/e2e-lib.
  { args: [`e2e-lib:${TAG}`], ref: `e2e-lib:${TAG}`, id: configDigest(IMAGES.library), arch: 'amd64', repoDigest: `e2e-lib@${IMAGES.library.manifestDigest}`, pulled: { repo: REPOS.library, image: IMAGES.library } },
  { args: [`test/multi:${TAG}`], ref: `test/multi:${TAG}`, id: configDigest(child(IMAGES.multi, 'amd64')), arch: 'amd64', repoDigest: `test/multi@${IMAGES.multi.manifestDigest}`, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] } },
  { args: ['--platform', 'linux/arm64', `test/multi:${TAG}`], ref: `test/multi:${TAG}`, id: configDigest(child(IMAGES.multi, 'arm64')), arch: 'arm64', pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
];

async function pullAll(): Promise<void> {
  for (const p of PULLS) {
    await docker(['pull', '--quiet', ...p.args]);
    const img = await inspect(p.ref);
    assert.equal(img.Id, p.id, `${p.args.join(' ')}: image ID is the config digest`);
    assert.equal(img.Architecture, p.arch, `${p.args.join(' ')}: architecture`);
    assert.equal(img.Os, 'linux');
    if (p.repoDigest !== undefined) assert.ok(img.RepoDigests?.includes(p.repoDigest), `${p.args.join(' ')}: RepoDigests ${JSON.stringify(img.RepoDigests)} has ${p.repoDigest}`);
  }
}

/** Every blob of every pull was downloaded by dockerd from Gantry since the tap was reset. */
function assertClientFetchedBlobs(): void {
  for (const d of new Set(PULLS.flatMap((p) => pulledBlobs(p.pulled)))) {
    assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/blobs/${d}` }).length >= 1, `dockerd downloaded ${d} from Gantry`);
  }
}

async function removeAllImages(): Promise<void> {
  const ids = (await docker(['images', '--all', '--quiet'])).stdout.split('\n').filter(Boolean);
  if (ids.length > 0) await docker(['rmi', '--force', ...new Set(ids)]);
  assert.equal((await docker(['images', '--all', '--quiet'])).stdout.trim(), '', 'no image left');
}

describe('dockerd with deploy/examples/daemon.json', { skip: skipUnlessRoot(), timeout: 240_000 }, () => {
  before(async () => {
    assertInstalled(DOCKERD, DOCKER);
    env = await startE2eEnv('dockerd');
    const dir = join(env.tmp, 'dockerd');
    await mkdir(dir, { recursive: true });
    const daemonJson = await renderExample('daemon.json', env.mirrorHost, join(dir, 'daemon.json'));
    assert.deepEqual(JSON.parse(daemonJson), { 'registry-mirrors': [`http://${env.mirrorHost}`] });
    dockerd = await startDockerd({ dir, configFile: join(dir, 'daemon.json'), marker: env.tmp });
  });

  after(async () => {
    try {
      await dockerd?.daemon.stop();
    } finally {
      await env?.stop();
    }
  });

  test('first pull: every image comes through Gantry, each object fetched upstream once', async (t) => {
    env.tap.reset();
    const since = env.fwd.requests.length;
    await pullAll();
    assertFetchedOnce(env.fwd.requests.slice(since), PULLS.map((p) => p.pulled));

    // What dockerd sent: a /v2/ ping, HEAD by tag to resolve, then GETs by digest; never ?ns=.
    const sent = env.tap.requests;
    t.diagnostic(`dockerd → Gantry:\n${describeTap(sent)}`);
    assert.equal(env.tap.tlsProbes(), 0, 'an http:// mirror is spoken to in plain HTTP');
    assert.ok(env.tap.http({ method: 'GET', targetIncludes: /^\/v2\/$/ }).length >= 1, 'dockerd pings /v2/');
    assert.equal(env.tap.http({ method: 'HEAD', targetIncludes: `/v2/library/e2e-lib/manifests/${TAG}` }).length, 1, 'single-component names get library/');
    assert.equal(env.tap.http({ targetIncludes: 'ns=' }).length, 0, 'dockerd does not send ?ns=');
    assertClientFetchedBlobs();
  });

  test('second pull after removing the images: nothing is downloaded upstream', async (t) => {
    await removeAllImages();
    env.tap.reset();
    const since = env.fwd.requests.length;
    await pullAll();
    const upstream = env.fwd.requests.slice(since);
    t.diagnostic(`upstream during the second pull:\n${upstream.map((r) => `${r.method} ${r.path}`).join('\n')}`);
    assertNothingFetched(upstream);
    assertClientFetchedBlobs();
  });

  test('with Docker Hub credentials in the client config the pull still works (what reaches Gantry is recorded)', async (t) => {
    const withCreds = join(env.tmp, 'dockerd', 'client-with-creds');
    await mkdir(withCreds);
    await writeFile(join(withCreds, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from(`${CREDS.username}:${CREDS.password}`).toString('base64') } } }));
    await docker(['rmi', '--force', `test/docker:${TAG}`]);
    env.tap.reset();
    const since = env.fwd.requests.length;
    await docker(['pull', '--quiet', `test/docker:${TAG}`], { config: withCreds });
    assert.equal((await inspect(`test/docker:${TAG}`)).Id, configDigest(IMAGES.docker));
    t.diagnostic(describeCredentialUse(env.tap.requests, env.fwd.requests.slice(since), { 'docker.io': CREDS }));
  });

  test(
    'with the origin unreachable, a tag pulled before (within its TTL) still pulls',
    async () => {
      await docker(['rmi', '--force', `test/oci:${TAG}`]);
      env.fwd.setTarget('http://127.0.0.1:9'); // discard port: connection refused
      try {
        const res = await docker(['pull', '--quiet', `test/oci:${TAG}`], { allowFailure: true });
        assert.equal(res.code, 0, `docker pull with the origin down: ${res.stderr.trim()}`);
        assert.equal((await inspect(`test/oci:${TAG}`)).Id, configDigest(IMAGES.oci));
      } finally {
        env.fwd.setTarget(env.origin.url);
      }
    },
  );
});
