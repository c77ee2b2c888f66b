// HTTPS end to end (issue 15). Gantry (two serving processes) serves a certificate made with the
// README's own openssl commands, run as written (`<!-- test: https certificates -->`, with
// IP:127.0.0.1 for the README's IP). Each client is configured with deploy/examples/https/ and
// trusts the CA the way the README's HTTPS section says: dockerd and podman through certs.d under
// /etc (put there for the test, then removed and anything that was there put back), containerd with
// `ca` in hosts.toml, skopeo with --src-cert-dir. For each: without the CA the pull fails and
// nothing reaches Gantry's HTTP; with it, the first pull fetches each object upstream once, and
// after the client forgot it, a second pull fetches nothing upstream. The tap in front of Gantry
// sees only TLS: no client fell back to plain HTTP.
//
// dockerd does not check the certificate of any registry on 127.0.0.0/8, so it reaches Gantry as
// `gantry.local` (the README's DNS name) through a forward proxy that stands in for DNS; that name
// does not resolve here, so dockerd treats it as secure and checks the certificate against certs.d.
//
// Plain HTTP answering a TLS ClientHello with 400 (what podman's `insecure = true` relies on) is
// test/integration/faults-and-input.test.ts, and podman.test.ts / skopeo.test.ts pull that way.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { X509Certificate } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { buildImage, pushImage, type BuiltImage } from '../fixtures/images.ts';
import { closeWithin, listenOnLoopback } from '../helpers/loopback.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { CONTAINERD, CTR, DOCKER, DOCKERD, PODMAN, preparePodman, SKOPEO, startContainerd, startDockerd } from './engines.ts';
import {
  assertFetchedOnce,
  assertNothingFetched,
  child,
  configDigest,
  describeTap,
  IMAGES,
  pulledBlobs,
  renderExample,
  REPOS,
  run,
  startE2eEnv,
  startScope,
  TAG,
  type E2eEnv,
  type Pulled,
  type Scope,
} from './harness.ts';
import { OPENSSL, requireE2eHost } from './host.ts';

const execFileP = promisify(execFile);
const README = fileURLToPath(new URL('../../README.md', import.meta.url));
/** The README's example address and name for Gantry, in its SANs and in the examples. */
const README_IP = 'IP:10.0.0.5';
const NAME = 'gantry.local';
/** Where the containerd example keeps the CA; the test's hosts dir stands in for it. */
const CONTAINERD_CA = '/etc/containerd/certs.d/gantry-ca.crt';

/** skopeo's own image, so that each client's first pull is cold. */
const SKOPEO_REPO = 'test/tls';
const SKOPEO_IMAGE = buildImage({ format: 'oci', seed: 'e2e-https-skopeo' });

type Pki = { dir: string; caFile: string; certFile: string; keyFile: string };

/** The README's certificate commands, with 127.0.0.1 for its example IP, run in `dir`. */
async function makeReadmeCertificates(dir: string): Promise<Pki> {
  const text = await readFile(README, 'utf8');
  const block = /<!-- test: https certificates -->\n```sh\n([\s\S]*?)```/.exec(text)?.[1];
  assert.ok(block, 'the README has the https certificates block');
  assert.ok(block.includes(README_IP), `the block names ${README_IP}`);
  await mkdir(dir, { recursive: true });
  await execFileP('sh', ['-e', '-c', block.replaceAll(README_IP, 'IP:127.0.0.1')], { cwd: dir, timeout: 60_000 });
  return { dir, caFile: join(dir, 'ca.crt'), certFile: join(dir, 'gantry.crt'), keyFile: join(dir, 'gantry.key') };
}

/**
 * Copy the CA to `file` (a certs.d path under /etc) as the README says. The returned undo (run
 * once, also at the scope's stop) removes it and the directories it made, only if empty: another
 * run may use them. A file that was there is put back.
 */
async function placeCa(scope: Scope, caFile: string, file: string): Promise<() => Promise<void>> {
  const made: string[] = [];
  for (let d = dirname(file); !existsSync(d); d = dirname(d)) made.push(d);
  const before = existsSync(file) ? await readFile(file) : undefined;
  await mkdir(dirname(file), { recursive: true });
  await copyFile(caFile, file);
  let undone: Promise<void> | undefined;
  const undo = (): Promise<void> =>
    (undone ??= (async () => {
      if (before !== undefined) await writeFile(file, before);
      else await rm(file, { force: true });
      for (const d of made) await rmdir(d).catch(() => {});
    })());
  scope.defer(undo);
  return undo;
}

type NameProxy = { url: string; connects: string[]; stop(): Promise<void> };

/**
 * A forward proxy standing in for DNS: CONNECT to `name:port` is tunnelled to 127.0.0.1:port,
 * anything else (dockerd's fallback, registry-1.docker.io) gets a 403.
 */
async function startNameProxy(name: string, port: number): Promise<NameProxy> {
  const connects: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => res.writeHead(403).end());
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    connects.push(req.url ?? '');
    sockets.add(client);
    client.on('error', () => client.destroy());
    if (req.url !== `${name}:${port}`) {
      client.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port }, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  const proxyPort = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${proxyPort}`,
    connects,
    stop: () =>
      closeWithin(server, 'name proxy', () => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      }),
  };
}

describe('HTTPS end to end: the README certificate, each client trusting it as documented', { timeout: 300_000 }, () => {
  let scope: Scope;
  let env: E2eEnv;
  let pki: Pki;
  let trusting: Agent;

  before(async () => {
    requireE2eHost(DOCKERD, DOCKER, CONTAINERD, CTR, PODMAN, SKOPEO, OPENSSL);
    scope = await startScope('tls');
    pki = await makeReadmeCertificates(join(scope.tmp, 'pki'));
    env = await startE2eEnv('https', { mirror: { tls: { certFile: pki.certFile, keyFile: pki.keyFile } } });
    scope.defer(() => env.stop());
    await pushImage(env.origin.url, SKOPEO_REPO, TAG, SKOPEO_IMAGE);
    trusting = new Agent({ connect: { ca: await readFile(pki.caFile) } });
    scope.defer(() => trusting.close());
  });

  after(async () => {
    await scope?.stop();
  });

  /** Blob GETs Gantry answered with 200, from its merged /metrics. */
  const blobGetsServed = async (): Promise<number> => {
    const res = await request(`${env.mirror.url}/metrics`, { dispatcher: trusting });
    let n = 0;
    for (const line of (await res.body.text()).split('\n')) {
      if (line.startsWith('gantry_requests_total{') && line.includes('kind="blob"') && line.includes('method="GET"') && line.includes('status="200"')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return n;
  };

  /** Every connection the client made to Gantry was TLS: not one plain HTTP request. */
  const assertOnlyTls = (who: string): void => {
    assert.ok(env.tap.tlsProbes() >= 1, `${who} connected to Gantry`);
    assert.deepEqual(env.tap.http(), [], `${who} spoke only TLS to Gantry:\n${describeTap(env.tap.requests)}`);
  };

  /** A pull that must fail at the TLS handshake: nothing reached Gantry's HTTP, nothing went upstream. */
  const refusedWithoutCa = async (who: string, attempt: () => Promise<{ code: number | null; stderr: string }>, says: () => Promise<string>): Promise<void> => {
    env.tap.reset();
    const since = env.fwd.requests.length;
    const res = await attempt();
    assert.notEqual(res.code, 0, `${who} without the CA: the pull fails`);
    assert.match(await says(), /x509: certificate signed by unknown authority/, `${who} without the CA: refused for the certificate`);
    assertOnlyTls(who);
    assert.deepEqual(env.fwd.requests.slice(since), [], `${who} without the CA: nothing went upstream`);
  };

  /**
   * The first pull (each object fetched upstream once) and, after `forget`, the second (nothing
   * fetched upstream, every blob downloaded from Gantry again), all over TLS.
   */
  const pullTwice = async (who: string, pulls: Pulled[], pullAll: () => Promise<void>, forget: () => Promise<void>): Promise<void> => {
    const blobs = new Set(pulls.flatMap((p) => pulledBlobs(p))).size;
    for (const round of ['first', 'second'] as const) {
      if (round === 'second') await forget();
      env.tap.reset();
      const since = env.fwd.requests.length;
      const served = await blobGetsServed();
      await pullAll();
      const upstream = env.fwd.requests.slice(since);
      if (round === 'first') assertFetchedOnce(upstream, pulls);
      else assertNothingFetched(upstream);
      assertOnlyTls(`${who} (${round} pull)`);
      // Counted when a response ends, which may be a moment after the client has its bytes.
      await waitFor(`${who} (${round} pull) downloaded its ${blobs} blobs from Gantry`, async () => (await blobGetsServed()) - served >= blobs, { timeoutMs: 5_000, intervalMs: 100 });
    }
  };

  test("the README's openssl commands make a CA and a certificate for 127.0.0.1 and gantry.local, which Gantry serves", async () => {
    const cert = new X509Certificate(await readFile(pki.certFile));
    assert.equal(cert.subjectAltName, `IP Address:127.0.0.1, DNS:${NAME}`);
    assert.ok(cert.verify(new X509Certificate(await readFile(pki.caFile)).publicKey), 'signed by the CA');
    assert.match(env.mirror.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ping = await request(`${env.mirror.url}/v2/`, { dispatcher: trusting });
    await ping.body.dump();
    // The challenge clients follow for their token points back at the TLS port.
    assert.equal(ping.statusCode, 401);
    assert.match(String(ping.headers['www-authenticate']), new RegExp(`^Bearer realm="https://127\\.0\\.0\\.1:${env.mirror.port}/token"`));
  });

  test('dockerd: an https:// mirror (deploy/examples/https/daemon.json), the CA in /etc/docker/certs.d/<host:port>/ca.crt; on a loopback address it checks no certificate', async (t) => {
    const port = Number(env.tap.host.split(':')[1]);
    const host = `${NAME}:${port}`;
    const proxy = await startNameProxy(NAME, port);
    scope.defer(() => proxy.stop());
    const dir = join(env.tmp, 'dockerd');
    await mkdir(dir, { recursive: true });
    const daemonJson = await renderExample('https/daemon.json', host, join(dir, 'daemon.json'));
    assert.deepEqual(JSON.parse(daemonJson), { 'registry-mirrors': [`https://${host}`] });
    const proxyEnv = { HTTPS_PROXY: proxy.url, https_proxy: proxy.url, HTTP_PROXY: proxy.url, http_proxy: proxy.url, NO_PROXY: '', no_proxy: '' };
    const dockerd = await startDockerd({ dir, configFile: join(dir, 'daemon.json'), marker: env.tmp, env: { ...process.env, ...proxyEnv } });
    scope.defer(() => dockerd.daemon.stop());
    const pulls = [
      { ref: `${REPOS.docker}:${TAG}`, image: IMAGES.docker, pulled: { repo: REPOS.docker, image: IMAGES.docker } },
      // A single-component name: dockerd asks the mirror for library/e2e-lib.
      { ref: `e2e-lib:${TAG}`, image: IMAGES.library, pulled: { repo: REPOS.library, image: IMAGES.library } },
    ];
    /** `ref` is the image pulled: its ID is the config digest, its RepoDigests name the manifest's. */
    const assertPulled = async (ref: string, image: BuiltImage): Promise<void> => {
      const [img] = JSON.parse((await dockerd.docker(['image', 'inspect', ref])).stdout) as Array<{ Id: string; RepoDigests: string[] }>;
      assert.ok(img, `docker image inspect ${ref}`);
      assert.equal(img.Id, configDigest(image), `${ref}: image ID is the config digest`);
      assert.ok(img.RepoDigests.some((d) => d.endsWith(`@${image.manifestDigest}`)), `${ref}: RepoDigests ${JSON.stringify(img.RepoDigests)}`);
    };
    const removeAll = async (): Promise<void> => {
      const ids = (await dockerd.docker(['images', '--all', '--quiet'])).stdout.split('\n').filter(Boolean);
      if (ids.length > 0) await dockerd.docker(['rmi', '--force', ...new Set(ids)]);
    };
    try {
      await refusedWithoutCa(
        'dockerd',
        () => dockerd.docker(['pull', '--quiet', `${REPOS.docker}:${TAG}`], { allowFailure: true }),
        () => dockerd.daemon.log(),
      );
      assert.ok(proxy.connects.includes(host), `dockerd went to ${host} through the proxy: ${proxy.connects.join(', ')}`);
      const undo = await placeCa(scope, pki.caFile, `/etc/docker/certs.d/${host}/ca.crt`);
      try {
        // No restart: dockerd reads certs.d on every pull.
        await pullTwice(
          'dockerd',
          pulls.map((p) => p.pulled),
          async () => {
            for (const p of pulls) {
              await dockerd.docker(['pull', '--quiet', p.ref]);
              await assertPulled(p.ref, p.image);
            }
          },
          removeAll,
        );
      } finally {
        await undo();
      }
      t.diagnostic(`dockerd → proxy: ${[...new Set(proxy.connects)].join(', ')}`);

      // The README's warning: the same mirror on a loopback address, with no CA anywhere, pulls.
      // dockerd reloads registry-mirrors on SIGHUP.
      await removeAll();
      await renderExample('https/daemon.json', env.mirrorHost, join(dir, 'daemon.json'));
      const reloads = async (): Promise<number> => (await dockerd.daemon.log()).split('Reloaded configuration').length - 1;
      const before = await reloads();
      process.kill(dockerd.daemon.pid, 'SIGHUP');
      await waitFor('dockerd reloaded daemon.json', async () => (await reloads()) > before, { timeoutMs: 10_000, intervalMs: 100 });
      env.tap.reset();
      const connects = proxy.connects.length;
      await dockerd.docker(['pull', '--quiet', `${REPOS.docker}:${TAG}`]);
      await assertPulled(`${REPOS.docker}:${TAG}`, IMAGES.docker);
      assertOnlyTls('dockerd (loopback mirror)');
      assert.deepEqual(proxy.connects.slice(connects), [], 'dockerd reached the loopback mirror directly');
    } finally {
      await dockerd.daemon.stop();
    }
  });

  test('containerd: hosts.toml with ca = (deploy/examples/https/containerd/*)', async () => {
    const dir = join(env.tmp, 'containerd');
    const hostsDir = join(dir, 'certs.d');
    const noCaDir = join(dir, 'certs.d-no-ca');
    for (const registry of ['docker.io', 'registry.example.com']) {
      const rel = `https/containerd/${registry}/hosts.toml`;
      const text = await renderExample(rel, env.mirrorHost, join(hostsDir, registry, 'hosts.toml'), [[CONTAINERD_CA, join(hostsDir, 'gantry-ca.crt')]]);
      assert.ok(text.includes(`[host."https://${env.mirrorHost}"]`));
      // The same file without its `ca` line: what containerd does without the CA.
      const caLine = /^\s*ca = .*\n/m;
      assert.match(text, caLine);
      await mkdir(join(noCaDir, registry), { recursive: true });
      await writeFile(join(noCaDir, registry, 'hosts.toml'), text.replace(caLine, ''));
    }
    await copyFile(pki.caFile, join(hostsDir, 'gantry-ca.crt'));
    const containerd = await startContainerd({ dir, marker: env.tmp, namespace: 'gantry-e2e-tls' });
    scope.defer(() => containerd.daemon.stop());
    const pull = (ref: string, hosts: string, allowFailure = false): ReturnType<typeof containerd.ctr> =>
      containerd.ctr(['images', 'pull', '--snapshotter', 'native', '--hosts-dir', hosts, ref], allowFailure ? { allowFailure } : {});
    const imageDigests = async (): Promise<Map<string, string>> => {
      const out = new Map<string, string>();
      for (const line of (await containerd.ctr(['images', 'ls'])).stdout.split('\n').slice(1)) {
        const [ref, , digest] = line.trim().split(/\s+/);
        if (ref && digest) out.set(ref, digest);
      }
      return out;
    };
    const pulls = [
      { ref: `docker.io/${REPOS.oci}:${TAG}`, pulled: { repo: REPOS.oci, image: IMAGES.oci } },
      // Not Docker Hub: selected by the ?ns=registry.example.com containerd adds, inside TLS.
      { ref: `registry.example.com/${REPOS.example}:${TAG}`, pulled: { repo: REPOS.example, image: IMAGES.example } },
    ];
    try {
      let said = '';
      await refusedWithoutCa(
        'containerd',
        async () => {
          const res = await pull(pulls[0]?.ref ?? '', noCaDir, true);
          said = res.stderr;
          return res;
        },
        () => Promise.resolve(said),
      );
      await pullTwice(
        'containerd',
        pulls.map((p) => p.pulled),
        async () => {
          for (const p of pulls) {
            await pull(p.ref, hostsDir);
            assert.equal((await imageDigests()).get(p.ref), p.pulled.image.manifestDigest, `${p.ref}: image digest`);
          }
        },
        async () => {
          await containerd.ctr(['images', 'rm', '--sync', ...pulls.map((p) => p.ref)]); // --sync: garbage-collect now
          assert.deepEqual((await containerd.ctr(['content', 'ls', '--quiet'])).stdout.trim(), '', 'no content left');
        },
      );
    } finally {
      await containerd.daemon.stop();
    }
  });

  test('podman: registries.conf mirror without insecure (deploy/examples/https/registries.conf), the CA in /etc/containers/certs.d/<host:port>/ca.crt', async () => {
    const dir = join(env.tmp, 'podman');
    await mkdir(dir, { recursive: true });
    const registriesConf = join(dir, 'registries.conf');
    const text = await renderExample('https/registries.conf', env.mirrorHost, registriesConf);
    assert.ok(text.includes(`location = "${env.mirrorHost}"`) && !/^insecure/m.test(text));
    await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n');
    const { podman } = await preparePodman({ dir, registriesConf, authFile: join(dir, 'no-auth.json') });
    scope.defer(async () => {
      await podman(['rmi', '--all', '--force'], { allowFailure: true }).catch(() => {});
    });
    const ref = `docker.io/${REPOS.multi}:${TAG}`;
    const amd64 = child(IMAGES.multi, 'amd64');
    let said = '';
    await refusedWithoutCa(
      'podman',
      async () => {
        const res = await podman(['pull', '--quiet', ref], { allowFailure: true });
        said = res.stderr;
        return res;
      },
      () => Promise.resolve(said),
    );
    const undo = await placeCa(scope, pki.caFile, `/etc/containers/certs.d/${env.mirrorHost}/ca.crt`);
    try {
      await pullTwice(
        'podman',
        [{ repo: REPOS.multi, image: IMAGES.multi, arches: ['amd64'] }],
        async () => {
          const { stdout } = await podman(['pull', '--quiet', ref]);
          assert.equal(`sha256:${stdout.trim()}`, configDigest(amd64), 'podman pull prints the image ID');
          const [img] = JSON.parse((await podman(['image', 'inspect', ref])).stdout) as Array<{ Digest: string; Architecture: string }>;
          assert.equal(img?.Digest, IMAGES.multi.manifestDigest, 'the digest the tag points at');
          assert.equal(img.Architecture, 'amd64');
        },
        async () => {
          await podman(['rmi', '--all', '--force']);
        },
      );
    } finally {
      await undo();
    }
  });

  test('skopeo copy --src-cert-dir DIR docker://<gantry>/...', async () => {
    // A directory with ca.crt alone: skopeo takes a .key there for half of a client certificate.
    const certDir = join(env.tmp, 'skopeo-certs');
    await mkdir(certDir);
    await copyFile(pki.caFile, join(certDir, 'ca.crt'));
    // No registries.conf mirror and no auth file of the host's: the reference names Gantry itself.
    const registriesConf = join(env.tmp, 'skopeo-registries.conf');
    await writeFile(registriesConf, '');
    await writeFile(join(env.tmp, 'skopeo-no-auth.json'), '{"auths":{}}\n');
    const src = `docker://${env.mirrorHost}/${SKOPEO_REPO}:${TAG}`;
    const copy = async (extra: string[], allowFailure = false): Promise<{ code: number | null; stderr: string; dest: string }> => {
      const dest = await mkdtemp(join(env.tmp, 'tls-copy-'));
      const res = await run(SKOPEO, ['--insecure-policy', '--registries-conf', registriesConf, 'copy', ...extra, src, `dir:${dest}`], {
        env: { ...process.env, REGISTRY_AUTH_FILE: join(env.tmp, 'skopeo-no-auth.json') },
        timeoutMs: 60_000,
        ...(allowFailure ? { allowFailure } : {}),
      });
      return { ...res, dest };
    };
    let said = '';
    await refusedWithoutCa(
      'skopeo',
      async () => {
        const res = await copy([], true);
        said = res.stderr;
        return res;
      },
      () => Promise.resolve(said),
    );
    await pullTwice(
      'skopeo',
      [{ repo: SKOPEO_REPO, image: SKOPEO_IMAGE }],
      async () => {
        const { dest } = await copy(['--src-cert-dir', certDir]);
        assert.ok((await readFile(join(dest, 'manifest.json'))).equals(SKOPEO_IMAGE.manifest), 'manifest.json byte for byte');
        const files = new Set(await readdir(dest));
        for (const b of SKOPEO_IMAGE.blobs) {
          const name = b.digest.slice('sha256:'.length);
          assert.ok(files.has(name) && (await readFile(join(dest, name))).equals(b.bytes), `blob ${b.digest} byte for byte`);
        }
      },
      () => Promise.resolve(), // each copy goes to a new directory
    );
  });
});
