// The acceptance of `gantry prefetch --platform`: prefetching the multi-arch image for linux/amd64
// fetches exactly the index, the amd64 manifest and its blobs upstream (counted at the forwarder
// in front of the registry: no arm64 manifest or blob), and a real client's amd64 pull afterwards
// (skopeo through deploy/examples/registries.conf) downloads nothing upstream.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SKOPEO } from './engines.ts';
import { assertFetchedOnce, assertNothingFetched, child, IMAGES, renderExample, REPOS, run, TAG, startE2eEnv, type E2eEnv } from './harness.ts';

let env: E2eEnv;

before(async () => {
  env = await startE2eEnv('prefetch');
});

after(async () => {
  await env?.stop();
});

test('prefetch --platform linux/amd64: exactly the amd64 manifest and blobs upstream; then skopeo\'s amd64 pull costs 0 GETs upstream', async () => {
  env.fwd.reset();
  const r = await run('bin/gantry', ['prefetch', `docker.io/${REPOS.multi}:${TAG}`, '--platform', 'linux/amd64', '--url', env.mirror.url], {
    env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LOG_LEVEL: 'warn' },
    timeoutMs: 60_000,
  });
  assert.match(r.stderr, new RegExp(`prefetched docker.io/${REPOS.multi}:${TAG} ${IMAGES.multi.manifestDigest}`), r.stderr);
  assertFetchedOnce(env.fwd.requests, [{ repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] }]);

  env.fwd.reset();
  const registriesConf = join(env.tmp, 'registries.conf');
  await renderExample('registries.conf', env.mirrorHost, registriesConf);
  const noAuth = join(env.tmp, 'no-auth.json');
  await writeFile(noAuth, '{"auths":{}}\n');
  const dest = await mkdtemp(join(env.tmp, 'copy-'));
  await run(SKOPEO, ['--insecure-policy', '--registries-conf', registriesConf, '--override-arch', 'amd64', 'copy', `docker://docker.io/${REPOS.multi}:${TAG}`, `dir:${dest}`], {
    env: { ...process.env, REGISTRY_AUTH_FILE: noAuth },
    timeoutMs: 60_000,
  });
  const amd64 = child(IMAGES.multi, 'amd64');
  assert.ok((await readFile(join(dest, 'manifest.json'))).equals(amd64.manifest), 'skopeo got the amd64 manifest, byte for byte');
  for (const b of amd64.blobs) assert.ok((await readFile(join(dest, b.digest.slice('sha256:'.length)))).equals(b.bytes), b.digest);
  assertNothingFetched(env.fwd.requests);
});
