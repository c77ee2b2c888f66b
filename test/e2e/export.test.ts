// The archive `gantry export` writes, read by the real tools: skopeo copy oci-archive:FILE:REF
// (digests equal the registry's), podman load -i FILE and docker load -i FILE (dockerd 20.10).
// The images are pulled through a running Gantry by `gantry export --fetch` itself.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';
import { SKOPEO, preparePodman, startDockerd } from './engines.ts';
import { child, configDigest, IMAGES, REPOS, run, TAG, startE2eEnv, type E2eEnv } from './harness.ts';

/** The three images of the acceptance: a Docker v2 image, an OCI image, a 2-platform OCI index. */
const EXPORTED: Array<{ ref: string; image: BuiltImage | BuiltIndex; loaded: BuiltImage }> = [
  { ref: `docker.io/${REPOS.docker}:${TAG}`, image: IMAGES.docker, loaded: IMAGES.docker },
  { ref: `docker.io/${REPOS.oci}:${TAG}`, image: IMAGES.oci, loaded: IMAGES.oci },
  { ref: `docker.io/${REPOS.multi}:${TAG}`, image: IMAGES.multi, loaded: child(IMAGES.multi, 'amd64') },
];

let env: E2eEnv;
let archive: string;

before(async () => {
  env = await startE2eEnv('export');
  archive = join(env.tmp, 'images.tar');
  const r = await run('bin/gantry', ['export', ...EXPORTED.map((e) => e.ref), '-o', archive, '--fetch', '--url', env.mirror.url, '--cache-dir', env.mirror.cacheDir], {
    env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn' },
    timeoutMs: 120_000,
  });
  assert.match(r.stderr, /exported/, r.stderr);
});

after(async () => {
  await env?.stop();
});

describe('gantry export read by the real tools', () => {
  test('skopeo copy oci-archive:FILE:REF finds each image by name, with the registry\'s bytes and digests', async () => {
    for (const e of EXPORTED) {
      const dest = await mkdtemp(join(env.tmp, 'skopeo-'));
      await run(SKOPEO, ['--insecure-policy', 'copy', ...('children' in e.image ? ['--all'] : []), `oci-archive:${archive}:${e.ref}`, `dir:${dest}`], { timeoutMs: 60_000 });
      assert.ok((await readFile(join(dest, 'manifest.json'))).equals(e.image.manifest), `${e.ref}: the registry's manifest bytes (digest ${e.image.manifestDigest})`);
      if ('children' in e.image) {
        for (const c of e.image.children) assert.ok((await readFile(join(dest, `${c.manifestDigest.slice(7)}.manifest.json`))).equals(c.manifest), `${e.ref}: child ${c.manifestDigest}`);
      }
    }
  });

  test('skopeo reads a --platform linux/arm64 export: Gantry\'s narrowed index around the registry\'s arm64 manifest', async () => {
    const narrowed = join(env.tmp, 'arm64.tar');
    const ref = `docker.io/${REPOS.multi}:${TAG}`;
    await run('bin/gantry', ['export', ref, '-o', narrowed, '--platform', 'linux/arm64', '--url', env.mirror.url, '--cache-dir', env.mirror.cacheDir], {
      env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn' },
      timeoutMs: 60_000,
    });
    const dest = await mkdtemp(join(env.tmp, 'skopeo-arm64-'));
    await run(SKOPEO, ['--insecure-policy', 'copy', '--all', `oci-archive:${narrowed}:${ref}`, `dir:${dest}`], { timeoutMs: 60_000 });
    const index = JSON.parse(await readFile(join(dest, 'manifest.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    const arm64 = child(IMAGES.multi, 'arm64');
    assert.deepEqual(index.manifests.map((m) => m.digest), [arm64.manifestDigest]);
    assert.ok((await readFile(join(dest, `${arm64.manifestDigest.slice(7)}.manifest.json`))).equals(arm64.manifest), 'the arm64 manifest, byte for byte');
  });

  test('podman load -i FILE loads every image under its name', async () => {
    const dir = join(env.tmp, 'podman');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n');
    await writeFile(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    const podman = await preparePodman({ dir, registriesConf: join(dir, 'registries.conf'), authFile: join(dir, 'no-auth.json') });
    const loaded = await podman.podman(['load', '-i', archive], { timeoutMs: 120_000 });
    // podman 4.3 loads a multi-image archive by its manifest.json: full RepoTags keep docker.io/.
    for (const e of EXPORTED) assert.ok(loaded.stdout.includes(`Loaded image: ${e.ref}`), `${e.ref} in: ${loaded.stdout}`);
    for (const e of EXPORTED) {
      const [img] = JSON.parse((await podman.podman(['image', 'inspect', e.ref])).stdout) as Array<{ Id: string; Digest: string }>;
      assert.ok(img, `${e.ref} loaded`);
      assert.equal(`sha256:${img.Id}`, configDigest(e.loaded), `${e.ref}: image ID is the config digest`);
    }
  });

  test('docker load -i FILE (dockerd 20.10) loads every image under its name', async () => {
    const dir = join(env.tmp, 'dockerd');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'daemon.json'), '{}\n');
    const dockerd = await startDockerd({ dir, configFile: join(dir, 'daemon.json'), marker: env.tmp });
    try {
      await dockerd.docker(['load', '-i', archive], { timeoutMs: 120_000 });
      for (const e of EXPORTED) {
        const name = e.ref.replace(/^docker\.io\//, '');
        const [img] = JSON.parse((await dockerd.docker(['image', 'inspect', name])).stdout) as Array<{ Id: string }>;
        assert.equal(img?.Id, configDigest(e.loaded), `${name}: image ID is the config digest`);
      }
    } finally {
      await dockerd.daemon.stop();
    }
  });
});
