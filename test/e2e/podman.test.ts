// podman pulls through Gantry configured with deploy/examples/registries.conf (a docker.io mirror,
// `insecure = true`), given to podman as CONTAINERS_REGISTRIES_CONF. Private storage (--root,
// --runroot, vfs), no host containers.conf or storage.conf. Docker Hub itself is unreachable here,
// so every successful pull came from Gantry. A path-prefixed mirror location
// (deploy/examples/registries-path-prefix.conf) is covered, with private images, by private.test.ts.
// The pull scenario itself is test/e2e/scenarios.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PODMAN, preparePodman, type Podman } from './engines.ts';
import { child, configDigest, CREDS, describeCredentialUse, IMAGES, MIRROR_CREDS, renderExample, REPOS, TAG, type E2eEnv, type Pulled } from './harness.ts';
import { runPullScenarios, type PullEngine } from './scenarios.ts';

type Inspect = { Id: string; Digest: string; RepoDigests: string[]; Architecture: string; Os: string };

const hex = (digest: string): string => digest.slice('sha256:'.length);

const PULLS: Array<{ args: string[]; ref: string; id: string; arch: string; digest: string; pulled: Pulled }> = [
  { args: [`docker.io/${REPOS.docker}:${TAG}`], ref: `docker.io/${REPOS.docker}:${TAG}`, id: configDigest(IMAGES.docker), arch: 'amd64', digest: IMAGES.docker.manifestDigest, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { args: [`docker.io/${REPOS.oci}:${TAG}`], ref: `docker.io/${REPOS.oci}:${TAG}`, id: configDigest(IMAGES.oci), arch: 'amd64', digest: IMAGES.oci.manifestDigest, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  // A short name, resolved through the example's unqualified-search-registries, then library/.
  { args: [`e2e-lib:${TAG}`], ref: `docker.io/${REPOS.library}:${TAG}`, id: configDigest(IMAGES.library), arch: 'amd64', digest: IMAGES.library.manifestDigest, pulled: { repo: REPOS.library, image: IMAGES.library } },
  { args: [`docker.io/${REPOS.multi}:${TAG}`], ref: `docker.io/${REPOS.multi}:${TAG}`, id: configDigest(child(IMAGES.multi, 'amd64')), arch: 'amd64', digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] } },
  { args: ['--arch', 'arm64', `docker.io/${REPOS.multi}:${TAG}`], ref: `docker.io/${REPOS.multi}:${TAG}`, id: configDigest(child(IMAGES.multi, 'arm64')), arch: 'arm64', digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
];

type PodmanEngine = PullEngine & {
  dir: string;
  /** podman's environment without credentials (REGISTRY_AUTH_FILE: an empty auth.json). */
  baseEnv: NodeJS.ProcessEnv;
  podman: Podman['podman'];
  inspect(ref: string): Promise<Inspect>;
};

async function startPodmanEngine(env: E2eEnv): Promise<PodmanEngine> {
  const dir = join(env.tmp, 'podman');
  await mkdir(dir, { recursive: true });
  const registriesConf = join(dir, 'registries.conf');
  const text = await renderExample('registries.conf', env.mirrorHost, registriesConf);
  assert.ok(text.includes(`location = "${env.mirrorHost}"`));
  await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n');
  const engine = await preparePodman({ dir, registriesConf, authFile: join(dir, 'no-auth.json') }); // no credentials
  const podman: Podman['podman'] = (args, opts = {}) => engine.podman(args, opts);
  const inspect = async (ref: string): Promise<Inspect> => {
    const [first] = JSON.parse((await podman(['image', 'inspect', ref])).stdout) as Inspect[];
    assert.ok(first, `podman image inspect ${ref}`);
    return first;
  };
  return {
    dir,
    baseEnv: engine.env,
    podman,
    inspect,
    pulls: PULLS.map((p) => p.pulled),
    async pullAll() {
      for (const p of PULLS) {
        const { stdout } = await podman(['pull', '--quiet', ...p.args]);
        assert.equal(stdout.trim(), hex(p.id), `podman pull ${p.args.join(' ')} prints the image ID`);
        const img = await inspect(p.ref);
        assert.equal(`sha256:${img.Id}`, p.id, `${p.args.join(' ')}: image ID is the config digest`);
        assert.equal(img.Digest, p.digest, `${p.args.join(' ')}: digest is the one the tag points at`);
        assert.equal(img.Architecture, p.arch);
        assert.equal(img.Os, 'linux');
      }
    },
    async forget() {
      await podman(['rmi', '--all', '--force']);
      assert.equal((await podman(['images', '--all', '--quiet'])).stdout.trim(), '', 'no image left');
    },
    // insecure = true: podman tries TLS first, then plain HTTP on the same port.
    wire: { transport: 'tls-first', pingsV2: true, sendsNs: false },
    checkFirstRound() {
      assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/v2/${REPOS.library}/manifests/${TAG}` }).length >= 1, 'short name → docker.io/library/');
    },
    async forgetOci() {
      await podman(['rmi', '--force', `docker.io/${REPOS.oci}:${TAG}`]);
    },
    async pullOci() {
      const ref = `docker.io/${REPOS.oci}:${TAG}`;
      await podman(['pull', '--quiet', ref]);
      assert.equal(`sha256:${(await inspect(ref)).Id}`, configDigest(IMAGES.oci));
    },
    // podman has no daemon: its storage under the temp dir is all there is to clean.
    stop: async () => {
      await podman(['rmi', '--all', '--force'], { allowFailure: true }).catch(() => {});
    },
  };
}

describe('podman with deploy/examples/registries.conf', { timeout: 240_000 }, () => {
  const scenarios = runPullScenarios({ name: 'podman', verb: 'pull', forgetting: 'removing the images', requires: [PODMAN], start: startPodmanEngine });

  test('credentials in auth.json: for docker.io only, then for docker.io and the mirror (what reaches Gantry is recorded)', async (t) => {
    const [env, { dir, baseEnv, podman, inspect }] = [scenarios.env(), scenarios.engine()];
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
});
