// dockerd pulls through Gantry configured with deploy/examples/daemon.json (`registry-mirrors`).
// A private dockerd (own data-root, exec-root, socket; vfs; no bridge, no iptables) whose only way
// to Docker Hub is the mirror: its fallback, registry-1.docker.io, is unreachable here, so every
// successful pull was served by Gantry. The pull scenario itself is test/e2e/scenarios.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DOCKER, DOCKERD, startDockerd, type Dockerd, type RunOpts } from './engines.ts';
import { child, configDigest, CREDS, describeCredentialUse, IMAGES, renderExample, REPOS, TAG, type E2eEnv, type Pulled } from './harness.ts';
import { runPullScenarios, type PullEngine } from './scenarios.ts';

type Inspect = { Id: string; RepoDigests: string[] | null; Architecture: string; Os: string };

/** What `docker pull` is given, and what it must end up with. */
const PULLS: Array<{ args: string[]; ref: string; id: string; arch: string; repoDigest?: string; pulled: Pulled }> = [
  { args: [`test/docker:${TAG}`], ref: `test/docker:${TAG}`, id: configDigest(IMAGES.docker), arch: 'amd64', repoDigest: `test/docker@${IMAGES.docker.manifestDigest}`, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { args: [`test/oci:${TAG}`], ref: `test/oci:${TAG}`, id: configDigest(IMAGES.oci), arch: 'amd64', repoDigest: `test/oci@${IMAGES.oci.manifestDigest}`, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  // A single-component name: dockerd asks the mirror for library/e2e-lib.
  { args: [`e2e-lib:${TAG}`], ref: `e2e-lib:${TAG}`, id: configDigest(IMAGES.library), arch: 'amd64', repoDigest: `e2e-lib@${IMAGES.library.manifestDigest}`, pulled: { repo: REPOS.library, image: IMAGES.library } },
  { args: [`test/multi:${TAG}`], ref: `test/multi:${TAG}`, id: configDigest(child(IMAGES.multi, 'amd64')), arch: 'amd64', repoDigest: `test/multi@${IMAGES.multi.manifestDigest}`, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] } },
  { args: ['--platform', 'linux/arm64', `test/multi:${TAG}`], ref: `test/multi:${TAG}`, id: configDigest(child(IMAGES.multi, 'arm64')), arch: 'arm64', pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
];

type DockerEngine = PullEngine & {
  dir: string;
  docker(args: string[], opts?: RunOpts & { config?: string }): ReturnType<Dockerd['docker']>;
  inspect(ref: string): Promise<Inspect>;
};

async function startDockerEngine(env: E2eEnv): Promise<DockerEngine> {
  const dir = join(env.tmp, 'dockerd');
  await mkdir(dir, { recursive: true });
  const daemonJson = await renderExample('daemon.json', env.mirrorHost, join(dir, 'daemon.json'));
  assert.deepEqual(JSON.parse(daemonJson), { 'registry-mirrors': [`http://${env.mirrorHost}`] });
  const dockerd = await startDockerd({ dir, configFile: join(dir, 'daemon.json'), marker: env.tmp });
  const docker: DockerEngine['docker'] = (args, opts = {}) => dockerd.docker(args, opts);
  const inspect = async (ref: string): Promise<Inspect> => {
    const { stdout } = await docker(['image', 'inspect', ref]);
    const [first] = JSON.parse(stdout) as Inspect[];
    assert.ok(first, `docker image inspect ${ref}`);
    return first;
  };
  return {
    dir,
    docker,
    inspect,
    pulls: PULLS.map((p) => p.pulled),
    async pullAll() {
      for (const p of PULLS) {
        await docker(['pull', '--quiet', ...p.args]);
        const img = await inspect(p.ref);
        assert.equal(img.Id, p.id, `${p.args.join(' ')}: image ID is the config digest`);
        assert.equal(img.Architecture, p.arch, `${p.args.join(' ')}: architecture`);
        assert.equal(img.Os, 'linux');
        if (p.repoDigest !== undefined) assert.ok(img.RepoDigests?.includes(p.repoDigest), `${p.args.join(' ')}: RepoDigests ${JSON.stringify(img.RepoDigests)} has ${p.repoDigest}`);
      }
    },
    async forget() {
      const ids = (await docker(['images', '--all', '--quiet'])).stdout.split('\n').filter(Boolean);
      if (ids.length > 0) await docker(['rmi', '--force', ...new Set(ids)]);
      assert.equal((await docker(['images', '--all', '--quiet'])).stdout.trim(), '', 'no image left');
    },
    // A /v2/ ping, HEAD by tag to resolve, then GETs by digest; never ?ns=.
    wire: { transport: 'plain', pingsV2: true, sendsNs: false },
    checkFirstRound() {
      assert.equal(env.tap.http({ method: 'HEAD', targetIncludes: `/v2/library/e2e-lib/manifests/${TAG}` }).length, 1, 'single-component names get library/');
    },
    async forgetOci() {
      await docker(['rmi', '--force', `test/oci:${TAG}`]);
    },
    async pullOci() {
      const res = await docker(['pull', '--quiet', `test/oci:${TAG}`], { allowFailure: true });
      assert.equal(res.code, 0, `docker pull with the origin down: ${res.stderr.trim()}`);
      assert.equal((await inspect(`test/oci:${TAG}`)).Id, configDigest(IMAGES.oci));
    },
    stop: () => dockerd.daemon.stop(),
  };
}

describe('dockerd with deploy/examples/daemon.json', { timeout: 240_000 }, () => {
  const scenarios = runPullScenarios({ name: 'dockerd', verb: 'pull', forgetting: 'removing the images', requires: [DOCKERD, DOCKER], start: startDockerEngine });

  test('with Docker Hub credentials in the client config the pull still works (what reaches Gantry is recorded)', async (t) => {
    const [env, { dir, docker, inspect }] = [scenarios.env(), scenarios.engine()];
    const withCreds = join(dir, 'client-with-creds');
    await mkdir(withCreds);
    await writeFile(join(withCreds, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from(`${CREDS.username}:${CREDS.password}`).toString('base64') } } }));
    await docker(['rmi', '--force', `test/docker:${TAG}`]);
    env.tap.reset();
    const since = env.fwd.requests.length;
    await docker(['pull', '--quiet', `test/docker:${TAG}`], { config: withCreds });
    assert.equal((await inspect(`test/docker:${TAG}`)).Id, configDigest(IMAGES.docker));
    t.diagnostic(describeCredentialUse(env.tap.requests, env.fwd.requests.slice(since), { 'docker.io': CREDS }));
  });
});
