// podman pulls through Gantry configured with deploy/examples/registries.conf (a docker.io mirror,
// `insecure = true`), given to podman as CONTAINERS_REGISTRIES_CONF. Private storage (--root,
// --runroot, vfs), no host containers.conf or storage.conf. Docker Hub itself is unreachable here,
// so every successful pull came from Gantry. A path-prefixed mirror location
// (deploy/examples/registries-path-prefix.conf) is covered, with private images, by private.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PODMAN, preparePodman, type Podman } from './engines.ts';
import {
  assertFetchedOnce, assertInstalled, assertNothingFetched, child, configDigest, CREDS, describeCredentialUse, describeTap, IMAGES, MIRROR_CREDS, pulledBlobs,
  renderExample, REPOS, skipUnlessRoot, startE2eEnv, TAG, type E2eEnv, type Pulled,
} from './harness.ts';

let env: E2eEnv;
let dir: string;
let engine: Podman;
let baseEnv: NodeJS.ProcessEnv;

function podman(args: string[], opts: { env?: NodeJS.ProcessEnv; allowFailure?: boolean } = {}) {
  return engine.podman(args, opts);
}

type Inspect = { Id: string; Digest: string; RepoDigests: string[]; Architecture: string; Os: string };

async function inspect(ref: string): Promise<Inspect> {
  const [first] = JSON.parse((await podman(['image', 'inspect', ref])).stdout) as Inspect[];
  assert.ok(first, `podman image inspect ${ref}`);
  return first;
}

const hex = (digest: string): string => digest.slice('sha256:'.length);

const PULLS: Array<{ args: string[]; ref: string; id: string; arch: string; digest: string; pulled: Pulled }> = [
  { args: [`docker.io/${REPOS.docker}:${TAG}`], ref: `docker.io/${REPOS.docker}:${TAG}`, id: configDigest(IMAGES.docker), arch: 'amd64', digest: IMAGES.docker.manifestDigest, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { args: [`docker.io/${REPOS.oci}:${TAG}`], ref: `docker.io/${REPOS.oci}:${TAG}`, id: configDigest(IMAGES.oci), arch: 'amd64', digest: IMAGES.oci.manifestDigest, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  // A short name, resolved through the example's unqualified-search-registries, then library/.
  { args: [`e2e-lib:${TAG}`], ref: `docker.io/${REPOS.library}:${TAG}`, id: configDigest(IMAGES.library), arch: 'amd64', digest: IMAGES.library.manifestDigest, pulled: { repo: REPOS.library, image: IMAGES.library } },
  { args: [`docker.io/${REPOS.multi}:${TAG}`], ref: `docker.io/${REPOS.multi}:${TAG}`, id: configDigest(child(IMAGES.multi, 'amd64')), arch: 'amd64', digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] } },
  { args: ['--arch', 'arm64', `docker.io/${REPOS.multi}:${TAG}`], ref: `docker.io/${REPOS.multi}:${TAG}`, id: configDigest(child(IMAGES.multi, 'arm64')), arch: 'arm64', digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
];

async function pullAll(): Promise<void> {
  for (const p of PULLS) {
    const { stdout } = await podman(['pull', '--quiet', ...p.args]);
    assert.equal(stdout.trim(), hex(p.id), `podman pull ${p.args.join(' ')} prints the image ID`);
    const img = await inspect(p.ref);
    assert.equal(`sha256:${img.Id}`, p.id, `${p.args.join(' ')}: image ID is the config digest`);
    assert.equal(img.Digest, p.digest, `${p.args.join(' ')}: digest is the one the tag points at`);
    assert.equal(img.Architecture, p.arch);
    assert.equal(img.Os, 'linux');
  }
}

async function removeAllImages(): Promise<void> {
  await podman(['rmi', '--all', '--force']);
  assert.equal((await podman(['images', '--all', '--quiet'])).stdout.trim(), '', 'no image left');
}

describe('podman with deploy/examples/registries.conf', { skip: skipUnlessRoot(), timeout: 240_000 }, () => {
  before(async () => {
    assertInstalled(PODMAN);
    env = await startE2eEnv('podman');
    dir = join(env.tmp, 'podman');
    await mkdir(dir, { recursive: true });
    const registriesConf = join(dir, 'registries.conf');
    const text = await renderExample('registries.conf', env.mirrorHost, registriesConf);
    assert.ok(text.includes(`location = "${env.mirrorHost}"`));
    await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n');
    engine = await preparePodman({ dir, registriesConf, authFile: join(dir, 'no-auth.json') }); // no credentials
    baseEnv = engine.env;
  });

  after(async () => {
    try {
      if (engine !== undefined) await podman(['rmi', '--all', '--force'], { allowFailure: true }).catch(() => {});
    } finally {
      await env?.stop();
    }
  });

  test('first pull: every image comes through Gantry, each object fetched upstream once', async (t) => {
    env.tap.reset();
    const since = env.fwd.requests.length;
    await pullAll();
    assertFetchedOnce(env.fwd.requests.slice(since), PULLS.map((p) => p.pulled));

    t.diagnostic(`podman → Gantry:\n${describeTap(env.tap.requests)}`);
    // insecure = true: podman tries TLS first, then plain HTTP on the same port.
    assert.ok(env.tap.tlsProbes() >= 1, 'podman sent a TLS ClientHello first');
    assert.ok(env.tap.http({ method: 'GET', targetIncludes: /^\/v2\/$/ }).length >= 1, 'podman pings /v2/');
    assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/v2/${REPOS.library}/manifests/${TAG}` }).length >= 1, 'short name → docker.io/library/');
    assert.equal(env.tap.http({ targetIncludes: 'ns=' }).length, 0, 'podman does not send ?ns=');
    for (const d of new Set(PULLS.flatMap((p) => pulledBlobs(p.pulled)))) {
      assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/blobs/${d}` }).length >= 1, `podman downloaded ${d} from Gantry`);
    }
  });

  test('second pull after removing the images: nothing is downloaded upstream', async (t) => {
    await removeAllImages();
    env.tap.reset();
    const since = env.fwd.requests.length;
    await pullAll();
    const upstream = env.fwd.requests.slice(since);
    t.diagnostic(`upstream during the second pull:\n${upstream.map((r) => `${r.method} ${r.path}`).join('\n') || '(nothing)'}`);
    assertNothingFetched(upstream);
    for (const d of new Set(PULLS.flatMap((p) => pulledBlobs(p.pulled)))) {
      assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/blobs/${d}` }).length >= 1, `podman downloaded ${d} from Gantry`);
    }
  });

  test('credentials in auth.json: for docker.io only, then for docker.io and the mirror (what reaches Gantry is recorded)', async (t) => {
    const b64 = (c: { username: string; password: string }): string => Buffer.from(`${c.username}:${c.password}`).toString('base64');
    const ref = `docker.io/${REPOS.docker}:${TAG}`;
    for (const [label, auths] of [
      ['docker.io only', { 'docker.io': { auth: b64(CREDS) } }],
      ['docker.io and the mirror', { 'docker.io': { auth: b64(CREDS) }, [env.mirrorHost]: { auth: b64(MIRROR_CREDS) } }],
    ] as const) {
      const authFile = join(dir, 'auth.json');
      await writeFile(authFile, JSON.stringify({ auths }));
      await podman(['rmi', '--force', ref]);
      env.tap.reset();
      const since = env.fwd.requests.length;
      await podman(['pull', '--quiet', ref], { env: { ...baseEnv, REGISTRY_AUTH_FILE: authFile } });
      assert.equal(`sha256:${(await inspect(ref)).Id}`, configDigest(IMAGES.docker));
      t.diagnostic(`auth.json with ${label}:\n${describeCredentialUse(env.tap.requests, env.fwd.requests.slice(since), { 'docker.io': CREDS, mirror: MIRROR_CREDS })}`);
    }
  });

  test('with the origin unreachable, a tag pulled before (within its TTL) still pulls', async () => {
    const ref = `docker.io/${REPOS.oci}:${TAG}`;
    await podman(['rmi', '--force', ref]);
    env.fwd.setTarget('http://127.0.0.1:9'); // discard port: connection refused
    try {
      await podman(['pull', '--quiet', ref]);
      assert.equal(`sha256:${(await inspect(ref)).Id}`, configDigest(IMAGES.oci));
    } finally {
      env.fwd.setTarget(env.origin.url);
    }
  });
});
