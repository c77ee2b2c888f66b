/**
 * `gantry import` for real: the launcher imports archives into a stopped cache, or through the
 * running Gantry that holds it; Gantry then serves them with its only upstream unreachable behind
 * a counting forwarder, which proves that nothing went upstream.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { legacyDockerSave, ociLayout, tarOf, entriesOf } from '../fixtures/archives.ts';
import { buildImage, buildIndex, MANIFEST_ACCEPT, sha256 } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { runGantry } from '../helpers/gantry-process.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';

const execFileP = promisify(execFile);

/** The test's environment without GANTRY_CONFIG, as runGantry runs commands. */
function withoutConfigEnv(): NodeJS.ProcessEnv {
  const { GANTRY_CONFIG: _, ...env } = process.env;
  return env;
}

const oci = buildImage({ format: 'oci', seed: 'import-int-oci' });
const multi = buildIndex({ format: 'oci', platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }], seed: 'import-int-multi' });
const legacy = buildImage({ format: 'docker', seed: 'import-int-legacy' });

let work: string;
let fwd: CountingForwarder;
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'gantry-import-int-'));
  // Port 9 (discard) on loopback: nothing listens, so every forwarded request would fail, and is counted.
  fwd = await startCountingForwarder({ target: 'http://127.0.0.1:9' });
  await writeFile(path.join(work, 'oci.tar'), await tarOf(entriesOf(ociLayout([{ image: oci, refName: 'docker.io/library/app:1' }, { image: multi, refName: 'docker.io/team/multi:2' }]))));
  await writeFile(path.join(work, 'legacy.tar'), await tarOf(entriesOf(legacyDockerSave(legacy, ['legacy:3']))));
  const bad = ociLayout([{ image: oci, refName: 'docker.io/library/bad:1' }]);
  await writeFile(path.join(work, 'bad.tar'), await tarOf([...entriesOf(bad), { name: '../../evil', data: Buffer.from('x') }]));
});
after(async () => {
  await fwd.stop();
  await rm(work, { recursive: true, force: true });
});


async function configFile(name: string, cacheDir: string): Promise<string> {
  const file = path.join(work, name);
  await writeFile(file, JSON.stringify({ cacheDir, upstreams: [{ host: 'docker.io', url: fwd.url }], logLevel: 'silent' }));
  return file;
}

async function get(mirror: Mirror, p: string): Promise<{ status: number; body: Buffer; type: string | null; digest: string | null }> {
  const res = await fetch(`${mirror.url}${p}`, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), type: res.headers.get('content-type'), digest: res.headers.get('docker-content-digest') };
}

/** Pull a tag and everything under it from the mirror; every body must hash to its digest. */
async function pullAll(mirror: Mirror, repo: string, tag: string, expected: string): Promise<void> {
  const top = await get(mirror, `/v2/${repo}/manifests/${tag}`);
  assert.equal(top.status, 200, `${repo}:${tag}`);
  assert.equal(top.digest, expected);
  assert.equal(sha256(top.body), expected);
  const walk = async (bytes: Buffer): Promise<void> => {
    const m = JSON.parse(bytes.toString()) as { manifests?: Array<{ digest: string }>; config?: { digest: string }; layers?: Array<{ digest: string }> };
    for (const d of m.manifests ?? []) {
      const child = await get(mirror, `/v2/${repo}/manifests/${d.digest}`);
      assert.equal(sha256(child.body), d.digest);
      await walk(child.body);
    }
    for (const d of [...(m.config ? [m.config] : []), ...(m.layers ?? [])]) {
      const blob = await get(mirror, `/v2/${repo}/blobs/${d.digest}`);
      assert.equal(blob.status, 200);
      assert.equal(sha256(blob.body), d.digest);
    }
  };
  await walk(top.body);
}

describe('gantry import on a terminal', () => {
  it('draws a progress bar of bytes read for each pass (cli-progress), then the summary', async () => {
    const config = await configFile('tty.json', path.join(work, 'cache-tty'));
    const archive = path.join(work, 'oci.tar');
    // util-linux `script` gives the command a pseudo-terminal and copies what it draws to stdout.
    const { stdout } = await execFileP('script', ['-qefc', `stty cols 200; bin/gantry import -c ${config} ${archive}`, '/dev/null'], {
      timeout: 60_000,
      env: { ...withoutConfigEnv(), GANTRY_NODE: process.execPath },
    });
    const screen = stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    assert.match(screen, new RegExp(`${archive.replaceAll('.', '\\.')} pass 2 \\| [1-9]\\d* bytes`));
    assert.match(screen, /1 archive\(s\): 2 image\(s\)/);
  });
});

describe('gantry import into a stopped cache, then served with the upstream unreachable', () => {
  it('imports an OCI archive (image + multi-arch index) and a legacy docker save; every pull is served with 0 upstream requests', async () => {
    const cacheDir = path.join(work, 'cache-stopped');
    const config = await configFile('stopped.json', cacheDir);
    const r = await runGantry(['import', '-c', config, path.join(work, 'oci.tar'), path.join(work, 'legacy.tar')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`imported library/app:1 ${oci.manifestDigest}`));
    assert.match(r.stdout, new RegExp(`imported team/multi:2 ${multi.manifestDigest}`));
    const legacyLine = /imported library\/legacy:3 (sha256:[0-9a-f]{64}) \(manifest built by Gantry/.exec(r.stdout);
    assert.ok(legacyLine?.[1], r.stdout);
    assert.match(r.stdout, /2 archive\(s\): 3 image\(s\), 3 tag\(s\), 5 manifest\(s\), blobs 11 new \/ 0 already present/);

    const mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }] }, cacheDir);
    try {
      const before = fwd.requests.length;
      await pullAll(mirror, 'library/app', '1', oci.manifestDigest);
      await pullAll(mirror, 'team/multi', '2', multi.manifestDigest);
      await pullAll(mirror, 'library/legacy', '3', legacyLine[1]);
      assert.equal(fwd.requests.length - before, 0, 'no request went upstream');
    } finally {
      await mirror.destroy();
    }
  });

  it('a bad archive exits 1 with one line naming the file and entry, and leaves the cache empty', async () => {
    const cacheDir = path.join(work, 'cache-bad');
    const config = await configFile('bad.json', cacheDir);
    const r = await runGantry(['import', '-c', config, path.join(work, 'bad.tar')]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('gantry import:'));
    assert.deepEqual(lines, [`gantry import: ${path.join(work, 'bad.tar')}: entry "../../evil": path leaves the archive (..)`]);
    const blobs = await readdir(path.join(cacheDir, 'blobs', 'sha256')).catch(() => []);
    assert.deepEqual(blobs, []);
    assert.ok(!(await readdir(path.dirname(work))).includes('evil'));
  });

  it('an unknown --upstream is a usage error naming it', async () => {
    const config = await configFile('up.json', path.join(work, 'cache-up'));
    const r = await runGantry(['import', '-c', config, '--upstream', 'ghcr.io', path.join(work, 'oci.tar')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^gantry import: --upstream ghcr\.io is not a configured upstream/m);
  });
});

describe('gantry import while Gantry serves the same cache', () => {
  let mirror: Mirror;
  before(async () => {
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }] }, path.join(work, 'cache-running'));
  });
  after(async () => {
    await mirror.destroy();
  });

  it('sends the archive to POST /admin/import (the cache is locked) and the running instance serves it at once, 0 upstream requests', async () => {
    const config = await configFile('running.json', mirror.cacheDir);
    const r = await runGantry(['import', '-c', config, '--url', mirror.url, path.join(work, 'oci.tar')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /the cache is in use; importing through the running Gantry/);
    assert.match(r.stdout, new RegExp(`imported library/app:1 ${oci.manifestDigest}`));
    const before = fwd.requests.length;
    await pullAll(mirror, 'library/app', '1', oci.manifestDigest);
    await pullAll(mirror, 'team/multi', '2', multi.manifestDigest);
    assert.equal(fwd.requests.length - before, 0);
    assert.deepEqual((await readdir(path.join(mirror.cacheDir, 'tmp'))).filter((n) => n.startsWith('import-')), [], 'the spool is removed');
  });

  it('bad input through the running instance: exit 1, one line naming the file and entry; the API answers 400 with an OCI error', async () => {
    const config = await configFile('running-bad.json', mirror.cacheDir);
    const r = await runGantry(['import', '-c', config, '--url', mirror.url, path.join(work, 'bad.tar')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /gantry import: .*bad\.tar: .*entry "\.\.\/\.\.\/evil": path leaves the archive/);
    const res = await fetch(`${mirror.url}/admin/import?name=x.tar`, { method: 'POST', body: 'not a tar at all, just text' });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
    assert.match(body.errors[0]?.message ?? '', /^x\.tar: /);
    const up = await fetch(`${mirror.url}/admin/import?upstream=ghcr.io`, { method: 'POST', body: 'x' });
    assert.equal(up.status, 400);
    assert.equal(await mirror.close().then(() => 'closed'), 'closed');
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }] }, mirror.cacheDir);
    assert.equal((await get(mirror, '/v2/library/bad/manifests/1')).status === 200, false, 'nothing of the bad archive was tagged');
  });
});
