// containerd pulls through Gantry configured with deploy/examples/containerd/<host>/hosts.toml.
// A private containerd (own root, state and socket; CRI plugin off), driven with `ctr --hosts-dir`
// pointing at the templated examples: docker.io and a non-Docker-Hub registry
// (registry.example.com) through the same Gantry, told apart by the ?ns= containerd adds. The
// `server` fallbacks in the examples are unreachable here, so every successful pull came from Gantry.
// The pull scenario itself is test/e2e/scenarios.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CONTAINERD, CTR, startContainerd, type Containerd, type RunOpts } from './engines.ts';
import { child, CREDS, describeCredentialUse, IMAGES, pulledBlobs, pulledImages, renderExample, REPOS, TAG, type E2eEnv, type Pulled } from './harness.ts';
import { runPullScenarios, type PullEngine } from './scenarios.ts';

const NAMESPACE = 'gantry-e2e';

const PULLS: Array<{ ref: string; extra: string[]; digest: string; pulled: Pulled }> = [
  { ref: `docker.io/${REPOS.docker}:${TAG}`, extra: [], digest: IMAGES.docker.manifestDigest, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { ref: `docker.io/${REPOS.oci}:${TAG}`, extra: [], digest: IMAGES.oci.manifestDigest, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  { ref: `docker.io/${REPOS.library}:${TAG}`, extra: [], digest: IMAGES.library.manifestDigest, pulled: { repo: REPOS.library, image: IMAGES.library } },
  // One platform first (only its child goes upstream), then every platform (the rest does).
  { ref: `docker.io/${REPOS.multi}:${TAG}`, extra: ['--platform', 'linux/arm64'], digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
  { ref: `docker.io/${REPOS.multi}:${TAG}`, extra: ['--all-platforms'], digest: IMAGES.multi.manifestDigest, pulled: { repo: REPOS.multi, image: IMAGES.multi } },
  // Not Docker Hub: same Gantry, selected by ?ns=registry.example.com.
  { ref: `registry.example.com/${REPOS.example}:${TAG}`, extra: [], digest: IMAGES.example.manifestDigest, pulled: { repo: REPOS.example, image: IMAGES.example } },
];

type ContainerdEngine = PullEngine & {
  /** `ctr images pull` as documented: hosts.toml decides where it goes. native: no mounts to leave behind. */
  pull(ref: string, extra?: string[], opts?: RunOpts): ReturnType<Containerd['ctr']>;
  ctr: Containerd['ctr'];
  /** REF → DIGEST from `ctr images ls`. */
  imageDigests(): Promise<Map<string, string>>;
};

async function startContainerdEngine(env: E2eEnv): Promise<ContainerdEngine> {
  const dir = join(env.tmp, 'containerd');
  const hostsDir = join(dir, 'certs.d');
  for (const host of ['docker.io', 'registry.example.com']) {
    const text = await renderExample(`containerd/${host}/hosts.toml`, env.mirrorHost, join(hostsDir, host, 'hosts.toml'));
    assert.ok(text.includes(`[host."http://${env.mirrorHost}"]`));
  }
  const containerd = await startContainerd({ dir, marker: env.tmp, namespace: NAMESPACE });
  const ctr: Containerd['ctr'] = (args, opts = {}) => containerd.ctr(args, opts);
  const pull: ContainerdEngine['pull'] = (ref, extra = [], opts = {}) => ctr(['images', 'pull', '--snapshotter', 'native', '--hosts-dir', hostsDir, ...extra, ref], opts);
  const imageDigests = async (): Promise<Map<string, string>> => {
    const { stdout } = await ctr(['images', 'ls']);
    const out = new Map<string, string>();
    for (const line of stdout.split('\n').slice(1)) {
      const [ref, , digest] = line.trim().split(/\s+/);
      if (ref && digest) out.set(ref, digest);
    }
    return out;
  };
  const contentDigests = async (): Promise<Set<string>> => new Set((await ctr(['content', 'ls', '--quiet'])).stdout.split('\n').filter(Boolean));
  return {
    ctr,
    pull,
    imageDigests,
    pulls: PULLS.map((p) => p.pulled),
    async pullAll() {
      for (const p of PULLS) {
        await pull(p.ref, p.extra);
        assert.equal((await imageDigests()).get(p.ref), p.digest, `${p.ref} ${p.extra.join(' ')}: image digest`);
      }
      const content = await contentDigests();
      for (const p of PULLS) {
        for (const img of pulledImages(p.pulled)) assert.ok(content.has(img.manifestDigest), `content store has ${img.manifestDigest}`);
        for (const d of pulledBlobs(p.pulled)) assert.ok(content.has(d), `content store has ${d}`);
      }
    },
    async forget() {
      const refs = [...(await imageDigests()).keys()];
      if (refs.length > 0) await ctr(['images', 'rm', '--sync', ...refs]); // --sync: garbage-collect now
      assert.equal((await imageDigests()).size, 0, 'no image left');
      assert.deepEqual([...(await contentDigests())], [], 'no content left');
    },
    wire: { transport: 'plain', pingsV2: false, sendsNs: true },
    checkFirstRound(_t, upstream) {
      // --platform linux/arm64 came first: the amd64 child went upstream only with --all-platforms,
      // after the arm64 one.
      const order = upstream.map((r) => r.path);
      const arm = order.findIndex((p) => p.endsWith(`/manifests/${child(IMAGES.multi, 'arm64').manifestDigest}`));
      const amd = order.findIndex((p) => p.endsWith(`/manifests/${child(IMAGES.multi, 'amd64').manifestDigest}`));
      assert.ok(arm >= 0 && amd > arm, 'the arm64 child was fetched before the amd64 one');
      // Every request names its registry: ?ns=docker.io, or ?ns=registry.example.com.
      for (const r of env.tap.http().filter((q) => /^\/v2\/.+\/(manifests|blobs)\//.test(q.target))) {
        const ns = new URL(r.target, 'http://x').searchParams.get('ns');
        const expected = r.target.startsWith(`/v2/${REPOS.example}/`) ? 'registry.example.com' : 'docker.io';
        assert.equal(ns, expected, `${r.method} ${r.target}`);
      }
      assert.ok(env.tap.http({ method: 'HEAD', targetIncludes: `/v2/${REPOS.example}/manifests/${TAG}?ns=registry.example.com` }).length >= 1);
      assert.ok(env.tap.http({ method: 'HEAD', targetIncludes: `/v2/${REPOS.library}/manifests/${TAG}?ns=docker.io` }).length >= 1);
      // The non-Docker-Hub repository reached the origin under its own name (no library/, no host).
      assert.ok(upstream.some((r) => r.path.startsWith(`/v2/${REPOS.example}/manifests/`)));
    },
    async forgetOci() {
      await ctr(['images', 'rm', '--sync', `docker.io/${REPOS.oci}:${TAG}`]);
    },
    async pullOci() {
      const ref = `docker.io/${REPOS.oci}:${TAG}`;
      const res = await pull(ref, [], { allowFailure: true });
      assert.equal(res.code, 0, `ctr pull with the origin down: ${res.stderr.trim()}`);
      assert.equal((await imageDigests()).get(ref), IMAGES.oci.manifestDigest);
    },
    stop: () => containerd.daemon.stop(),
  };
}

describe('containerd with deploy/examples/containerd/*/hosts.toml', { timeout: 240_000 }, () => {
  const scenarios = runPullScenarios({
    name: 'containerd',
    verb: 'pull',
    forgetting: 'removing the images and garbage-collecting',
    requires: [CONTAINERD, CTR],
    start: startContainerdEngine,
  });

  test('with credentials given to ctr the pull still works (what reaches Gantry is recorded)', async (t) => {
    const [env, { ctr, pull, imageDigests }] = [scenarios.env(), scenarios.engine()];
    const ref = `docker.io/${REPOS.docker}:${TAG}`;
    await ctr(['images', 'rm', '--sync', ref]);
    env.tap.reset();
    const since = env.fwd.requests.length;
    await pull(ref, ['--user', `${CREDS.username}:${CREDS.password}`]);
    assert.equal((await imageDigests()).get(ref), IMAGES.docker.manifestDigest);
    t.diagnostic(describeCredentialUse(env.tap.requests, env.fwd.requests.slice(since), { 'docker.io': CREDS }));
  });
});
