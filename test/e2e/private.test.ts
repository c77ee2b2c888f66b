// Private images through Gantry, end to end, with each engine that can give a mirror credentials.
//
// The origin is a real docker-registry behind Docker-style token auth (test/helpers/token-registry.ts):
// anonymous pulls everything except `private/`, alice (alice-pw) pulls everything. Gantry mirrors it
// twice: as docker.io (dockerd only mirrors Docker Hub names) and as registry.internal:5000 with the
// prefix alias `internal`. Each engine gets its own Gantry (a cold cache) and tap; they share the
// origin and the counting forwarder between Gantry and the registry.
//
// What is checked for every attempt, besides its outcome:
// - credentials stay on their path: client → Gantry → the token server. The registry only ever sees
//   the token server's JWTs (never a client's password, never a Gantry token), and the token server
//   only ever sees alice (with the upstream's own repository name as scope);
// - no engine reaches any other host. Each engine runs with HTTP_PROXY/HTTPS_PROXY set to a
//   recording proxy that refuses everything (loopback, where the tap is, is never proxied by Go).
//   A refused CONNECT carries no credential: it is only allowed to be the engine's own fallback
//   (dockerd's Docker Hub, the `server` / registry location in containerd's and podman's config),
//   and only when Gantry refused the pull.
// - the private-leak rule: once alice's pull has cached the image, the same engine without
//   credentials is refused (Gantry asks the upstream with the requester's own credential).
//
// Configuration under test: deploy/examples/daemon.json, deploy/examples/containerd/
// registry.internal:5000/hosts.toml, deploy/examples/registries-path-prefix.conf.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder, type ForwardedRequest } from '../helpers/counting-forwarder.ts';
import { startHttpProxy, type HttpProxy } from '../helpers/http-proxy.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { decodeJwt, pushImageWithToken, startTokenRegistry, type TokenRegistry, type TokenRequest } from '../helpers/token-registry.ts';
import { startClientTap, type ClientTap, type TappedRequest } from './client-tap.ts';
import { CTR, CONTAINERD, DOCKER, DOCKERD, PODMAN, preparePodman, SKOPEO, startContainerd, startDockerd, type Containerd, type Dockerd, type Podman } from './engines.ts';
import { configDigest, contentGets, renderExample, run, startScope, type RunResult, type Scope } from './harness.ts';
import { requireE2eHost } from './host.ts';

type Creds = { username: string; password: string };
const ALICE: Creds = { username: 'alice', password: 'alice-pw' };
const WRONG: Creds = { username: 'alice', password: 'not-alices-password' };
const INTERNAL = 'registry.internal:5000';
const PRIVATE = 'private/app';
const PUBLIC = 'public/app';
const TAG = 'v1';
const PRIV: BuiltImage = buildImage({ format: 'docker', seed: 'e2e-private-app' });
const PUB: BuiltImage = buildImage({ format: 'oci', seed: 'e2e-public-app' });

const b64 = (c: Creds): string => Buffer.from(`${c.username}:${c.password}`).toString('base64');
const basic = (c: Creds): string => `Basic ${b64(c)}`;
const hex = (digest: string): string => digest.slice('sha256:'.length);

let reg: TokenRegistry;
let fwd: CountingForwarder;
/** Refuses and records every request an engine sends to a host other than loopback. */
let sink: HttpProxy;
/** The proxy variables engines run with: everything not on loopback goes to the sink. */
let proxyEnv: NodeJS.ProcessEnv;

// ---------------------------------------------------------------------------------------------
// One Gantry + tap per engine

type Env = { scope: Scope; mirror: Mirror; tap: ClientTap; mirrorHost: string };

async function startEnv(name: string): Promise<Env> {
  const scope = await startScope(name);
  try {
    const mirror = await startMirror({
      upstreams: [
        { host: 'docker.io', url: fwd.url },
        { host: INTERNAL, url: fwd.url, prefix: 'internal' },
      ],
    });
    scope.defer(() => mirror.destroy());
    const tap = await startClientTap({ host: '127.0.0.1', port: mirror.port });
    scope.defer(() => tap.stop());
    return { scope, mirror, tap, mirrorHost: tap.host };
  } catch (err) {
    await scope.stop().catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// One attempt, and everything it caused

type Sent = Extract<TappedRequest, { kind: 'http' }>;

type Ran = RunResult & { code: number | null };

type Attempt<R extends Ran = Ran> = R & {
  /** What the engine sent to Gantry. */
  sent: Sent[];
  /** What Gantry sent to the registry. */
  upstream: ForwardedRequest[];
  /** What the token server was asked (by Gantry, relaying or for itself). */
  tokens: TokenRequest[];
  /** CONNECTs and plain requests the engine sent towards any other host (all refused). */
  connects: string[];
  proxied: string[];
};

async function attempt<R extends Ran>(env: Env, fn: () => Promise<R>): Promise<Attempt<R>> {
  const t0 = env.tap.requests.length;
  const f0 = fwd.requests.length;
  const k0 = reg.tokenRequests.length;
  const c0 = sink.connects.length;
  const p0 = sink.requests.length;
  const res = await fn();
  return {
    ...res,
    sent: env.tap.requests.slice(t0).filter((r): r is Sent => r.kind === 'http'),
    upstream: fwd.requests.slice(f0),
    tokens: reg.tokenRequests.slice(k0),
    connects: sink.connects.slice(c0),
    proxied: sink.requests.slice(p0),
  };
}

/** An Authorization header, described without its secret. */
function describeAuth(header: string | undefined): string {
  if (header === undefined) return 'no Authorization';
  const [scheme = '', value = ''] = header.split(' ');
  if (/^basic$/i.test(scheme)) return `Basic ${Buffer.from(value, 'base64').toString('utf8').split(':')[0] ?? '?'}:***`;
  if (/^bearer$/i.test(scheme)) {
    if (value.startsWith('gantry.')) return 'Bearer <Gantry token>';
    try {
      const { claims } = decodeJwt(value);
      return `Bearer <JWT iss=${String(claims['iss'])} sub=${JSON.stringify(claims['sub'])}>`;
    } catch {
      return 'Bearer <other>';
    }
  }
  return `${scheme} <other>`;
}

function describeForm(body: string | undefined): string {
  if (body === undefined) return '';
  const form = new URLSearchParams(body);
  if (form.has('password')) form.set('password', '***');
  return ` form{${[...form].map(([k, v]) => `${k}=${v}`).join(' ')}}`;
}

/** The whole story of an attempt, for the test's diagnostics (and the README notes). */
function explain(a: Attempt): string {
  const lines = [`exit ${a.code}${a.code === 0 ? '' : `: ${lastLine(a.stderr)}`}`, 'engine → Gantry:'];
  for (const r of a.sent) lines.push(`  ${r.method} ${r.target} (${describeAuth(r.headers['authorization'])})${describeForm(r.body)}`);
  lines.push('Gantry → token server:');
  for (const t of a.tokens) lines.push(`  ${t.method} account=${t.account ?? '(anonymous)'} scope=${t.scope.join(' ')} → ${t.status}`);
  lines.push('Gantry → registry:');
  for (const r of a.upstream) lines.push(`  ${r.method} ${r.path} (${describeAuth(headerOf(r, 'authorization'))}) → ${r.status}`);
  lines.push(`engine → other hosts (refused): ${[...a.connects.map((c) => `CONNECT ${c}`), ...a.proxied].join(', ') || 'none'}`);
  return lines.join('\n');
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}

function headerOf(r: ForwardedRequest, name: string): string | undefined {
  const v = r.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * Credentials went client → Gantry → token server only: the registry saw nothing but the token
 * server's JWTs, the token server saw only alice, and the engine reached no other host except,
 * by a refused CONNECT, its own configured fallback (`fallback`, only allowed on failure).
 */
function assertCredentialsStayed(a: Attempt, fallback: string): void {
  const story = explain(a);
  assert.deepEqual(a.proxied, [], `no plain-HTTP request to another host:\n${story}`);
  const allowed = a.code === 0 ? [] : [fallback];
  for (const c of a.connects) assert.ok(allowed.includes(c), `the engine connected to ${c}:\n${story}`);
  for (const r of a.upstream) {
    const auth = headerOf(r, 'authorization');
    if (auth === undefined) continue;
    const jwt = /^Bearer (\S+)$/.exec(auth)?.[1];
    assert.ok(jwt !== undefined && !jwt.startsWith('gantry.'), `${r.method} ${r.path}: only token-server tokens reach the registry:\n${story}`);
    assert.equal(decodeJwt(jwt).claims['iss'], reg.issuer, `${r.method} ${r.path}: a token of the token server`);
  }
  for (const t of a.tokens) {
    assert.ok(t.account === undefined || t.account === ALICE.username, `the token server only sees alice or anonymous:\n${story}`);
    if (t.account !== undefined) {
      for (const s of t.scope) assert.match(s, /^repository:(private|public)\/app:pull$/, `alice's credentials are relayed with the upstream's own name:\n${story}`);
    }
  }
}

/** The engine presented these credentials to Gantry, as Basic on /token or as an OAuth2 password grant. */
function presented(a: Attempt, c: Creds): boolean {
  return a.sent.some((r) => {
    if (!r.target.startsWith('/token')) return false;
    if (r.headers['authorization'] === basic(c)) return true;
    const form = new URLSearchParams(r.body ?? '');
    return form.get('grant_type') === 'password' && form.get('username') === c.username && form.get('password') === c.password;
  });
}

/** The token server checked alice's password for Gantry and said `status`. */
function relayed(a: Attempt, status: number): boolean {
  return a.tokens.some((t) => t.account === ALICE.username && t.status === status);
}

/** The private image's content left the registry for Gantry during the attempt. */
function privateFetched(a: Attempt): boolean {
  return contentGets(a.upstream).some((r) => r.path.startsWith(`/v2/${PRIVATE}/`) && r.status === 200);
}

/**
 * Access checks that refused someone: asked upstream now (`denied`), or remembered from an earlier
 * ask (`memo`; here only ever an earlier denial: no anonymous pull of private/ is ever allowed).
 */
async function refusedChecks(env: Env): Promise<number> {
  const [denied, memo] = await Promise.all(['denied', 'memo'].map((result) => metricValue(env.mirror.url, 'gantry_access_checks_total', { result })));
  return (denied ?? 0) + (memo ?? 0);
}

/** skopeo's dir: output is the fixture, byte for byte. */
async function assertDirHolds(dest: string, img: BuiltImage): Promise<void> {
  assert.ok((await readFile(join(dest, 'manifest.json'))).equals(img.manifest), 'manifest.json byte for byte');
  const files = new Set(await readdir(dest));
  for (const b of img.blobs) {
    assert.ok(files.has(hex(b.digest)), `blob ${b.digest}`);
    assert.ok((await readFile(join(dest, hex(b.digest)))).equals(b.bytes), `blob ${b.digest} byte for byte`);
  }
}

async function writeAuthFile(path: string, auths: Record<string, Creds>): Promise<string> {
  await writeFile(path, JSON.stringify({ auths: Object.fromEntries(Object.entries(auths).map(([k, c]) => [k, { auth: b64(c) }])) }));
  return path;
}

// ---------------------------------------------------------------------------------------------

describe('private images through Gantry with each engine', { timeout: 420_000 }, () => {
  let shared: Scope;

  before(async () => {
    requireE2eHost(DOCKERD, DOCKER, CONTAINERD, CTR, PODMAN, SKOPEO);
    shared = await startScope('prv'); // so an interrupted run stops these too
    reg = await startTokenRegistry({ users: { alice: ALICE.password } });
    shared.defer(() => reg.stop());
    await pushImageWithToken(reg, PRIVATE, TAG, PRIV);
    await pushImageWithToken(reg, PUBLIC, TAG, PUB);
    fwd = await startCountingForwarder({ target: reg.url });
    shared.defer(() => fwd.stop());
    sink = await startHttpProxy({ allowTarget: () => false });
    shared.defer(() => sink.stop());
    proxyEnv = { HTTP_PROXY: sink.url, HTTPS_PROXY: sink.url, http_proxy: sink.url, https_proxy: sink.url, NO_PROXY: '', no_proxy: '' };
  });

  after(async () => {
    await shared?.stop();
  });

  describe('dockerd (deploy/examples/daemon.json): Docker Hub credentials in the client config', () => {
    let env: Env;
    let d: Dockerd;
    const configs: Record<'alice' | 'wrong', string> = { alice: '', wrong: '' };
    const pull = (config?: string) => () => d.docker(['pull', '--quiet', `${PRIVATE}:${TAG}`], { allowFailure: true, ...(config ? { config } : {}) });

    before(async () => {
      env = await startEnv('prv-dockerd');
      const dir = join(env.scope.tmp, 'dockerd');
      await mkdir(dir, { recursive: true });
      const configFile = join(dir, 'daemon.json');
      await renderExample('daemon.json', env.mirrorHost, configFile);
      d = await startDockerd({ dir, configFile, marker: env.scope.tmp, env: { ...process.env, ...proxyEnv } });
      env.scope.defer(() => d.daemon.stop());
      for (const [name, creds] of [['alice', ALICE], ['wrong', WRONG]] as const) {
        const cfg = join(dir, `client-${name}`);
        await mkdir(cfg);
        await writeAuthFile(join(cfg, 'config.json'), { 'https://index.docker.io/v1/': creds });
        configs[name] = cfg;
      }
    });

    after(async () => {
      await env?.scope.stop();
    });

    test('without credentials: refused', async (t) => {
      const a = await attempt(env, pull());
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'docker pull fails');
      assert.ok(a.sent.some((r) => r.target === `/v2/${PRIVATE}/manifests/${TAG}`), `dockerd asked Gantry:\n${explain(a)}`);
      assert.ok(!privateFetched(a), 'nothing private left the registry');
      assertCredentialsStayed(a, 'registry-1.docker.io:443');
    });

    test('with a wrong password: refused at Gantry /token, which asked the upstream', async (t) => {
      const a = await attempt(env, pull(configs.wrong));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'docker pull fails');
      assert.ok(presented(a, WRONG), `dockerd offered its Docker Hub credentials to Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 401), 'the token server refused them');
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, 'registry-1.docker.io:443');
    });

    test("with alice's Docker Hub credentials: the private image pulls through Gantry", async (t) => {
      const a = await attempt(env, pull(configs.alice));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `docker pull: ${a.stderr}`);
      const [img] = JSON.parse((await d.docker(['image', 'inspect', `${PRIVATE}:${TAG}`])).stdout) as Array<{ Id: string; RepoDigests: string[] }>;
      assert.equal(img?.Id, configDigest(PRIV), 'image ID is the config digest');
      assert.ok(img.RepoDigests.includes(`${PRIVATE}@${PRIV.manifestDigest}`), `RepoDigests ${JSON.stringify(img.RepoDigests)}`);
      assert.ok(presented(a, ALICE), `dockerd offered alice's Docker Hub credentials to Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 200), 'Gantry checked them with the token server');
      assert.ok(privateFetched(a), 'the private image came from the registry');
      assertCredentialsStayed(a, 'registry-1.docker.io:443');
    });

    test("after alice's pull, a pull without credentials is refused from Gantry's cache", async (t) => {
      await d.docker(['rmi', '--force', `${PRIVATE}:${TAG}`]);
      const denied = await refusedChecks(env);
      const a = await attempt(env, pull());
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'docker pull fails');
      assert.ok(!privateFetched(a));
      assert.ok((await refusedChecks(env)) > denied, 'the access check refused an anonymous pull (asked upstream, or remembered)');
      assertCredentialsStayed(a, 'registry-1.docker.io:443');
    });
  });

  describe(`containerd (deploy/examples/containerd/${INTERNAL}/hosts.toml): ctr --user`, () => {
    let env: Env;
    let c: Containerd;
    let hostsDir: string;
    const REF = `${INTERNAL}/${PRIVATE}:${TAG}`;
    const pull = (extra: string[] = [], dir?: string) => () =>
      c.ctr(['images', 'pull', '--snapshotter', 'native', '--hosts-dir', dir ?? hostsDir, ...extra, REF], { allowFailure: true, env: { ...process.env, ...proxyEnv } });
    const digestOf = async (ref: string): Promise<string | undefined> => {
      for (const line of (await c.ctr(['images', 'ls'])).stdout.split('\n').slice(1)) {
        const [r, , digest] = line.trim().split(/\s+/);
        if (r === ref) return digest;
      }
      return undefined;
    };

    before(async () => {
      env = await startEnv('prv-containerd');
      const dir = join(env.scope.tmp, 'containerd');
      hostsDir = join(dir, 'certs.d');
      await renderExample(`containerd/${INTERNAL}/hosts.toml`, env.mirrorHost, join(hostsDir, INTERNAL, 'hosts.toml'));
      c = await startContainerd({ dir, marker: env.scope.tmp, namespace: 'gantry-e2e-private' });
      env.scope.defer(() => c.daemon.stop());
    });

    after(async () => {
      await env?.scope.stop();
    });

    test('without --user: refused', async (t) => {
      const a = await attempt(env, pull());
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'ctr pull fails');
      assert.ok(a.sent.some((r) => decodeURIComponent(r.target) === `/v2/${PRIVATE}/manifests/${TAG}?ns=${INTERNAL}`), `containerd asked Gantry, with ?ns=:\n${explain(a)}`);
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test('with a wrong password: refused at Gantry /token', async (t) => {
      const a = await attempt(env, pull(['--user', `${WRONG.username}:${WRONG.password}`]));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'ctr pull fails');
      assert.ok(presented(a, WRONG), `containerd logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 401));
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test('with --user alice: Gantry challenges, containerd logs in at its /token, the image pulls', async (t) => {
      const a = await attempt(env, pull(['--user', `${ALICE.username}:${ALICE.password}`]));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `ctr pull: ${a.stderr}`);
      assert.equal(await digestOf(REF), PRIV.manifestDigest);
      assert.ok(presented(a, ALICE), `containerd logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 200));
      assert.ok(privateFetched(a));
      // containerd sends nothing until challenged: its first request carries no Authorization.
      assert.equal(a.sent[0]?.headers['authorization'], undefined, 'the first request is anonymous');
      assertCredentialsStayed(a, INTERNAL);
    });

    test(`the escaped directory name ${INTERNAL.replace(':', '_')}_ works too`, async (t) => {
      await c.ctr(['images', 'rm', '--sync', REF]);
      const escaped = join(env.scope.tmp, 'containerd', 'certs.d-escaped');
      await renderExample(`containerd/${INTERNAL}/hosts.toml`, env.mirrorHost, join(escaped, `${INTERNAL.replace(':', '_')}_`, 'hosts.toml'));
      const a = await attempt(env, pull(['--user', `${ALICE.username}:${ALICE.password}`], escaped));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `ctr pull: ${a.stderr}`);
      assert.ok(a.sent.length > 0, 'through Gantry');
      assertCredentialsStayed(a, INTERNAL);
    });

    test("after alice's pull, a pull without --user is refused from Gantry's cache", async (t) => {
      await c.ctr(['images', 'rm', '--sync', REF]);
      const denied = await refusedChecks(env);
      const a = await attempt(env, pull());
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'ctr pull fails');
      assert.ok(!privateFetched(a));
      assert.ok((await refusedChecks(env)) > denied, 'the access check refused an anonymous pull (asked upstream, or remembered)');
      assertCredentialsStayed(a, INTERNAL);
    });

    test(
      'a refused request is retried once, not five times',
      async (t) => {
        const a = await attempt(env, pull());
        const retried = a.sent.filter((r) => r.method === 'HEAD' && r.headers['authorization'] !== undefined).length;
        t.diagnostic(`HEADs with a token: ${retried}\n${explain(a)}`);
        assert.notEqual(a.code, 0, 'ctr pull fails');
        assert.ok(retried <= 2, `containerd sent the manifest HEAD with its token ${retried} times`);
      },
    );
  });

  describe('podman (deploy/examples/registries-path-prefix.conf): auth.json', () => {
    let env: Env;
    let p: Podman;
    let dir: string;
    const auth: Record<'none' | 'mirror' | 'mirrorPath' | 'wrong' | 'registry', string> = { none: '', mirror: '', mirrorPath: '', wrong: '', registry: '' };
    const pull = (authFile: string, repo = PRIVATE) => () =>
      p.podman(['pull', '--quiet', `${INTERNAL}/${repo}:${TAG}`], { allowFailure: true, env: { ...p.env, REGISTRY_AUTH_FILE: authFile } });

    before(async () => {
      env = await startEnv('prv-podman');
      dir = join(env.scope.tmp, 'podman');
      await mkdir(join(dir, 'home'), { recursive: true });
      const registriesConf = join(dir, 'registries.conf');
      const text = await renderExample('registries-path-prefix.conf', env.mirrorHost, registriesConf);
      assert.ok(text.includes(`location = "${env.mirrorHost}/internal"`));
      auth.none = await writeAuthFile(join(dir, 'auth-none.json'), {});
      auth.mirror = await writeAuthFile(join(dir, 'auth-mirror.json'), { [env.mirrorHost]: ALICE });
      auth.mirrorPath = await writeAuthFile(join(dir, 'auth-mirror-path.json'), { [`${env.mirrorHost}/internal`]: ALICE });
      auth.wrong = await writeAuthFile(join(dir, 'auth-wrong.json'), { [env.mirrorHost]: WRONG });
      auth.registry = await writeAuthFile(join(dir, 'auth-registry.json'), { [INTERNAL]: ALICE });
      p = await preparePodman({ dir, registriesConf, authFile: auth.none, extraEnv: { ...proxyEnv, HOME: join(dir, 'home') } });
      env.scope.defer(async () => {
        await p.podman(['rmi', '--all', '--force'], { allowFailure: true });
      });
    });

    after(async () => {
      await env?.scope.stop();
    });

    test('a public image through the path-prefixed mirror, without credentials', async (t) => {
      const a = await attempt(env, pull(auth.none, PUBLIC));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `podman pull: ${a.stderr}`);
      assert.equal(a.stdout.trim(), hex(configDigest(PUB)));
      assert.ok(a.sent.some((r) => r.target === `/v2/internal/${PUBLIC}/manifests/${TAG}`), 'podman asked Gantry under the prefix');
      assertCredentialsStayed(a, INTERNAL);
    });

    test('the private image without credentials: refused', async (t) => {
      const a = await attempt(env, pull(auth.none));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'podman pull fails');
      assert.ok(a.sent.some((r) => r.target.startsWith(`/v2/internal/${PRIVATE}/manifests/`)), `podman asked Gantry:\n${explain(a)}`);
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test(`credentials only under ${INTERNAL} in auth.json: not sent to the mirror, refused`, async (t) => {
      const a = await attempt(env, pull(auth.registry));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'podman pull fails');
      assert.ok(!presented(a, ALICE), `podman did not give the mirror the registry's credentials:\n${explain(a)}`);
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test("a wrong password under the mirror's address: refused at Gantry /token", async (t) => {
      const a = await attempt(env, pull(auth.wrong));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'podman pull fails');
      assert.ok(presented(a, WRONG), `podman logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 401));
      assert.ok(!privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test("alice under the mirror's address: the private image pulls", async (t) => {
      const a = await attempt(env, pull(auth.mirror));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `podman pull: ${a.stderr}`);
      assert.equal(a.stdout.trim(), hex(configDigest(PRIV)));
      assert.ok(presented(a, ALICE), `podman logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 200));
      assert.ok(privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test("alice under the mirror's location with its path (host:port/internal): sent too", async (t) => {
      await p.podman(['rmi', '--force', `${INTERNAL}/${PRIVATE}:${TAG}`]);
      const a = await attempt(env, pull(auth.mirrorPath));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `podman pull: ${a.stderr}`);
      assert.equal(a.stdout.trim(), hex(configDigest(PRIV)));
      assert.ok(presented(a, ALICE), `podman logged in at Gantry's /token:\n${explain(a)}`);
      assertCredentialsStayed(a, INTERNAL);
    });

    test('`podman login` to the mirror stores the entry the pull then uses', async (t) => {
      const authFile = join(dir, 'auth-login.json');
      const login = await attempt(env, () => p.podman(['login', '--tls-verify=false', '--authfile', authFile, '-u', ALICE.username, '-p', ALICE.password, env.mirrorHost], { allowFailure: true }));
      t.diagnostic(`podman login:\n${explain(login)}`);
      assert.equal(login.code, 0, `podman login: ${login.stderr}`);
      const stored = JSON.parse(await readFile(authFile, 'utf8')) as { auths: Record<string, { auth?: string }> };
      assert.deepEqual(Object.keys(stored.auths), [env.mirrorHost]);
      assert.equal(stored.auths[env.mirrorHost]?.auth, b64(ALICE));
      await p.podman(['rmi', '--force', `${INTERNAL}/${PRIVATE}:${TAG}`]);
      const a = await attempt(env, pull(authFile));
      t.diagnostic(`podman pull:\n${explain(a)}`);
      assert.equal(a.code, 0, `podman pull: ${a.stderr}`);
      assert.ok(presented(a, ALICE));
      assertCredentialsStayed(a, INTERNAL);
    });

    test(
      '`podman login` to the mirror with a wrong password fails',
      async (t) => {
        const authFile = join(dir, 'auth-login-wrong.json');
        const login = await attempt(env, () => p.podman(['login', '--tls-verify=false', '--authfile', authFile, '-u', WRONG.username, '-p', WRONG.password, env.mirrorHost], { allowFailure: true }));
        t.diagnostic(explain(login));
        assert.notEqual(login.code, 0, 'podman login reports the wrong password');
      },
    );

    test("after alice's pull, a pull without credentials is refused from Gantry's cache", async (t) => {
      await p.podman(['rmi', '--force', `${INTERNAL}/${PRIVATE}:${TAG}`]);
      const denied = await refusedChecks(env);
      const a = await attempt(env, pull(auth.none));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'podman pull fails');
      assert.ok(!privateFetched(a));
      assert.ok((await refusedChecks(env)) > denied, 'the access check refused an anonymous pull (asked upstream, or remembered)');
      assertCredentialsStayed(a, INTERNAL);
    });
  });

  describe('skopeo: --src-creds to Gantry directly, and auth.json through registries-path-prefix.conf', () => {
    let env: Env;
    let registriesConf: string;
    let home: string;
    const auth: Record<'none' | 'mirror', string> = { none: '', mirror: '' };
    const skopeo = (args: string[], authFile = auth.none) =>
      run(SKOPEO, ['--insecure-policy', '--registries-conf', registriesConf, ...args], {
        env: { ...process.env, ...proxyEnv, HOME: home, REGISTRY_AUTH_FILE: authFile },
        timeoutMs: 60_000,
        allowFailure: true,
      });
    /** skopeo copy SRC dir:<a new dir>; `dest` is that dir. */
    const copy = async (args: string[], src: string, authFile?: string): Promise<Ran & { dest: string }> => {
      const dest = await mkdtemp(join(env.scope.tmp, 'copy-'));
      return { ...(await skopeo(['copy', ...args, src, `dir:${dest}`], authFile)), dest };
    };
    /** From Gantry's own address, under the prefix alias. */
    const direct = (creds?: Creds) => () =>
      copy(['--src-tls-verify=false', ...(creds ? ['--src-creds', `${creds.username}:${creds.password}`] : [])], `docker://${env.mirrorHost}/internal/${PRIVATE}:${TAG}`);
    /** From the registry's name, which registries-path-prefix.conf sends to Gantry first. */
    const viaMirror = (authFile: string, extra: string[] = []) => () => copy(extra, `docker://${INTERNAL}/${PRIVATE}:${TAG}`, authFile);

    before(async () => {
      env = await startEnv('prv-skopeo');
      registriesConf = join(env.scope.tmp, 'registries.conf');
      await renderExample('registries-path-prefix.conf', env.mirrorHost, registriesConf);
      home = join(env.scope.tmp, 'home');
      await mkdir(home);
      auth.none = await writeAuthFile(join(env.scope.tmp, 'auth-none.json'), {});
      auth.mirror = await writeAuthFile(join(env.scope.tmp, 'auth-mirror.json'), { [env.mirrorHost]: ALICE });
    });

    after(async () => {
      await env?.scope.stop();
    });

    test('direct, without credentials and with a wrong password: refused', async (t) => {
      for (const creds of [undefined, WRONG]) {
        const a = await attempt(env, direct(creds));
        t.diagnostic(`${creds ? 'wrong password' : 'no credentials'}:\n${explain(a)}`);
        assert.notEqual(a.code, 0, 'skopeo copy fails');
        if (creds) assert.ok(presented(a, creds) && relayed(a, 401), `skopeo logged in at Gantry's /token and was refused:\n${explain(a)}`);
        assert.ok(!privateFetched(a));
        assertCredentialsStayed(a, INTERNAL);
      }
    });

    test('direct with --src-creds alice: byte-identical copy', async (t) => {
      const a = await attempt(env, direct(ALICE));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `skopeo copy: ${a.stderr}`);
      await assertDirHolds(a.dest, PRIV);
      assert.ok(presented(a, ALICE), `skopeo logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(relayed(a, 200));
      assert.ok(privateFetched(a));
      assertCredentialsStayed(a, INTERNAL);
    });

    test("through the path-prefixed mirror with alice under the mirror's address in auth.json: byte-identical copy", async (t) => {
      const a = await attempt(env, viaMirror(auth.mirror));
      t.diagnostic(explain(a));
      assert.equal(a.code, 0, `skopeo copy: ${a.stderr}`);
      await assertDirHolds(a.dest, PRIV);
      assert.ok(presented(a, ALICE), `skopeo logged in at Gantry's /token:\n${explain(a)}`);
      assert.ok(a.sent.some((r) => r.target.startsWith(`/v2/internal/${PRIVATE}/`)), 'under the prefix');
      assertCredentialsStayed(a, INTERNAL);
    });

    test('through the path-prefixed mirror with --src-creds: not given to the mirror, refused', async (t) => {
      const a = await attempt(env, viaMirror(auth.none, ['--src-creds', `${ALICE.username}:${ALICE.password}`]));
      t.diagnostic(explain(a));
      assert.notEqual(a.code, 0, 'skopeo copy fails');
      assert.ok(!presented(a, ALICE), `skopeo kept --src-creds for the registry itself:\n${explain(a)}`);
      assertCredentialsStayed(a, INTERNAL);
    });

    test("after alice's copies, copies without credentials are refused from Gantry's cache", async (t) => {
      const denied = await refusedChecks(env);
      for (const [label, fn] of [['direct', direct()], ['through the mirror', viaMirror(auth.none)]] as const) {
        const a = await attempt(env, fn);
        t.diagnostic(`${label}:\n${explain(a)}`);
        assert.notEqual(a.code, 0, `${label}: skopeo copy fails`);
        assert.ok(!privateFetched(a));
        assertCredentialsStayed(a, INTERNAL);
      }
      assert.ok((await refusedChecks(env)) > denied, 'the access check refused anonymous pulls');
    });
  });
});
