// skopeo pulls through Gantry configured with deploy/examples/registries.conf, given with
// --registries-conf: `docker://docker.io/...` is rewritten to the mirror, as podman, buildah and
// CRI-O do (the integration tier instead points skopeo at Gantry's address directly). Docker Hub
// itself is unreachable here, so every successful copy came from Gantry. The pull scenario itself
// is test/e2e/scenarios.ts; each copy goes to a new directory, so there is nothing to forget
// between its rounds.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';
import { SKOPEO } from './engines.ts';
import { child, CREDS, describeCredentialUse, IMAGES, MIRROR_CREDS, pulledImages, renderExample, REPOS, run, TAG, type E2eEnv, type Pulled } from './harness.ts';
import { runPullScenarios, type PullEngine } from './scenarios.ts';

const COPIES: Array<{ global?: string[]; args: string[]; src: string; top: BuiltImage | BuiltIndex; pulled: Pulled }> = [
  { args: [], src: `docker://docker.io/${REPOS.docker}:${TAG}`, top: IMAGES.docker, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
  { args: [], src: `docker://docker.io/${REPOS.oci}:${TAG}`, top: IMAGES.oci, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
  // docker:// references are normalised: a single component is docker.io/library/.
  { args: [], src: `docker://e2e-lib:${TAG}`, top: IMAGES.library, pulled: { repo: REPOS.library, image: IMAGES.library } },
  // One platform of the index (arm64, not this machine's), then all of it.
  { global: ['--override-arch', 'arm64'], args: [], src: `docker://docker.io/${REPOS.multi}:${TAG}`, top: child(IMAGES.multi, 'arm64'), pulled: { repo: REPOS.multi, image: IMAGES.multi, arches: ['arm64'] } },
  { args: ['--all'], src: `docker://docker.io/${REPOS.multi}:${TAG}`, top: IMAGES.multi, pulled: { repo: REPOS.multi, image: IMAGES.multi } },
];

type SkopeoEngine = PullEngine & {
  skopeo(args: string[], opts?: { authFile?: string }): ReturnType<typeof run>;
};

async function prepareSkopeo(env: E2eEnv): Promise<SkopeoEngine> {
  const registriesConf = join(env.tmp, 'registries.conf');
  await renderExample('registries.conf', env.mirrorHost, registriesConf);
  const noAuth = join(env.tmp, 'no-auth.json');
  await writeFile(noAuth, '{"auths":{}}\n');
  const skopeo: SkopeoEngine['skopeo'] = (args, opts = {}) =>
    run(SKOPEO, ['--insecure-policy', '--registries-conf', registriesConf, ...args], { env: { ...process.env, REGISTRY_AUTH_FILE: opts.authFile ?? noAuth }, timeoutMs: 60_000 });
  return {
    skopeo,
    pulls: COPIES.map((c) => c.pulled),
    /** skopeo copy each source to a fresh dir: and compare every file with the fixture, byte for byte. */
    async pullAll() {
      for (const c of COPIES) {
        const dest = await mkdtemp(join(env.tmp, 'copy-'));
        await skopeo([...(c.global ?? []), 'copy', ...c.args, c.src, `dir:${dest}`]);
        const files = new Set(await readdir(dest));
        assert.ok((await readFile(join(dest, 'manifest.json'))).equals(c.top.manifest), `${c.src}: manifest.json is the ${c.top.mediaType} byte for byte`);
        for (const img of pulledImages(c.pulled)) {
          if (img !== c.top) {
            const name = `${img.manifestDigest.slice('sha256:'.length)}.manifest.json`;
            assert.ok(files.has(name), `${c.src}: child manifest ${img.manifestDigest}`);
            assert.ok((await readFile(join(dest, name))).equals(img.manifest));
          }
          for (const b of img.blobs) {
            const name = b.digest.slice('sha256:'.length);
            assert.ok(files.has(name), `${c.src}: blob ${b.digest}`);
            assert.ok((await readFile(join(dest, name))).equals(b.bytes), `${c.src}: blob ${b.digest} byte for byte`);
          }
        }
      }
    },
    wire: { transport: 'tls-first', pingsV2: true, sendsNs: false },
    checkFirstRound() {
      assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/v2/${REPOS.library}/manifests/${TAG}` }).length >= 1);
    },
    async pullOci() {
      const dest = await mkdtemp(join(env.tmp, 'down-'));
      await skopeo(['copy', `docker://docker.io/${REPOS.oci}:${TAG}`, `dir:${dest}`]);
      assert.ok((await readFile(join(dest, 'manifest.json'))).equals(IMAGES.oci.manifest));
    },
    stop: async () => {}, // nothing runs: the copies are under the environment's temp dir
  };
}

describe('skopeo with deploy/examples/registries.conf', { timeout: 180_000 }, () => {
  const scenarios = runPullScenarios({ name: 'skopeo', verb: 'copy', requires: [SKOPEO], start: prepareSkopeo });

  test('credentials: --src-creds and auth.json entries (what reaches Gantry is recorded)', async (t) => {
    const [env, { skopeo }] = [scenarios.env(), scenarios.engine()];
    const src = `docker://docker.io/${REPOS.docker}:${TAG}`;
    const copy = async (args: string[], authFile?: string): Promise<string> => {
      env.tap.reset();
      const since = env.fwd.requests.length;
      await skopeo(['copy', ...args, src, `dir:${await mkdtemp(join(env.tmp, 'creds-'))}`], authFile !== undefined ? { authFile } : {});
      return describeCredentialUse(env.tap.requests, env.fwd.requests.slice(since), { 'docker.io': CREDS, mirror: MIRROR_CREDS });
    };
    const b64 = (c: { username: string; password: string }): string => Buffer.from(`${c.username}:${c.password}`).toString('base64');
    const hubOnly = join(env.tmp, 'auth-hub.json');
    await writeFile(hubOnly, JSON.stringify({ auths: { 'docker.io': { auth: b64(CREDS) } } }));
    const both = join(env.tmp, 'auth-both.json');
    await writeFile(both, JSON.stringify({ auths: { 'docker.io': { auth: b64(CREDS) }, [env.mirrorHost]: { auth: b64(MIRROR_CREDS) } } }));
    t.diagnostic(`--src-creds (docker.io credentials):\n${await copy(['--src-creds', `${CREDS.username}:${CREDS.password}`])}`);
    t.diagnostic(`auth.json with docker.io only:\n${await copy([], hubOnly)}`);
    t.diagnostic(`auth.json with docker.io and the mirror:\n${await copy([], both)}`);
  });
});
