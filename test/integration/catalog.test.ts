// The catalog of cached repositories and tag lists that outlive an upstream, against real
// Distribution registries: a public one reached as docker.io (the default) and as ghcr.io, and an
// htpasswd-protected one behind the `internal` prefix, each through a counting forwarder.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { buildImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';

const ADMIN_TOKEN = 'catalog-admin-token';
const ALICE = { username: 'alice', password: 'alice-pw' };
const basic = (u: { username: string; password: string }): string => `Basic ${Buffer.from(`${u.username}:${u.password}`).toString('base64')}`;
const REQUEST_TIMEOUT_MS = 20_000;
const DISCARD = 'http://127.0.0.1:9'; // nothing listens there: connection refused

const shared = buildImage({ format: 'oci', seed: 'catalog-shared' });
const publicRepos: Record<string, BuiltImage> = {
  'library/alpine': buildImage({ format: 'docker', seed: 'catalog-alpine' }),
  'team/app-0': buildImage({ format: 'oci', seed: 'catalog-app-0' }),
  'team/app-1': buildImage({ format: 'oci', seed: 'catalog-app-1' }),
  // One image in two repositories: its manifest is recorded under the first; the second is found by its tag.
  'team/app-2': shared,
  'team/app-3': shared,
};
const tool = buildImage({ format: 'oci', seed: 'catalog-ghcr-tool' });
const secret = buildImage({ format: 'oci', seed: 'catalog-secret' });
const tagged = buildImage({ format: 'oci', seed: 'catalog-tagged' });

/** What anyone may see listed, sorted. */
const PUBLIC_NAMES = ['ghcr.io/org/tool', 'library/alpine', 'team/app-0', 'team/app-1', 'team/app-2', 'team/app-3', 'team/tagged'];
const SECRET_NAME = 'internal/secret/app';

let origin: UpstreamRegistry;
let privateOrigin: UpstreamRegistry;
let hub: CountingForwarder;
let ghcr: CountingForwarder;
let internal: CountingForwarder;
let mirror: Mirror;
const extra: Mirror[] = [];
let tmp: string;

type Answer = { status: number; headers: Record<string, string | string[] | undefined>; body: string };

async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(url, { headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

async function pull(name: string, tag: string, auth?: string): Promise<Answer> {
  return get(`${mirror.url}/v2/${name}/manifests/${tag}`, { accept: MANIFEST_ACCEPT, ...(auth ? { authorization: auth } : {}) });
}

/** Walk the catalog (or a tag list) by its Link headers from `path` to the end; every page and the Link that led on from it. */
async function walk(base: string, path: string, headers: Record<string, string> = {}): Promise<{ pages: string[][]; links: string[] }> {
  const pages: string[][] = [];
  const links: string[] = [];
  let next: string | undefined = path;
  for (let i = 0; next !== undefined; i++) {
    assert.ok(i < 20, 'the Link headers end');
    const res = await get(`${base}${next}`, headers);
    assert.equal(res.status, 200, `${next}: ${res.body}`);
    const body = JSON.parse(res.body) as { repositories?: string[]; tags?: string[] };
    pages.push(body.repositories ?? body.tags ?? []);
    const link = res.headers['link'];
    next = undefined;
    if (typeof link === 'string') {
      links.push(link);
      next = /^<([^>]+)>; rel="next"$/.exec(link)?.[1];
      assert.ok(next !== undefined, `a next link: ${link}`);
    }
  }
  return { pages, links };
}

const repositories = async (headers: Record<string, string> = {}, url = mirror.url): Promise<string[]> => (await walk(url, '/v2/_catalog', headers)).pages.flat();
const errorCode = (a: Answer): string | undefined => (JSON.parse(a.body) as { errors?: Array<{ code: string }> }).errors?.[0]?.code;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-catalog-'));
  [origin, privateOrigin] = await Promise.all([startUpstreamRegistry(), startUpstreamRegistry({ htpasswd: ALICE })]);
  for (const [repo, image] of Object.entries(publicRepos)) await pushImage(origin.url, repo, 'v1', image);
  for (const tag of ['v1', 'v2', 'v3', 'v4']) await pushImage(origin.url, 'team/tagged', tag, tagged);
  await pushImage(origin.url, 'org/tool', 'v1', tool);
  await pushImage(privateOrigin.url, 'secret/app', 'v1', secret, ALICE);
  [hub, ghcr, internal] = await Promise.all([
    startCountingForwarder({ target: origin.url }),
    startCountingForwarder({ target: origin.url }),
    startCountingForwarder({ target: privateOrigin.url }),
  ]);
  mirror = await startMirror({
    upstreams: [
      { host: 'docker.io', url: hub.url },
      { host: 'ghcr.io', url: ghcr.url },
      { host: 'registry.internal:5000', url: internal.url, prefix: 'internal' },
    ],
    adminToken: ADMIN_TOKEN,
    auth: { accessCheckTtlSeconds: 300, failClosed: true },
  });
  // Fill the cache the way clients would: by tag, through the mirror.
  for (const repo of Object.keys(publicRepos)) assert.equal((await pull(repo, 'v1')).status, 200, repo);
  for (const tag of ['v1', 'v2', 'v3']) assert.equal((await pull('team/tagged', tag)).status, 200); // v4 stays upstream only
  assert.equal((await pull('ghcr.io/org/tool', 'v1')).status, 200);
  const priv = await pull(SECRET_NAME, 'v1', basic(ALICE));
  assert.equal(priv.status, 200, priv.body);
});

after(async () => {
  for (const m of extra) await m.destroy();
  await mirror?.destroy();
  await Promise.all([hub?.stop(), ghcr?.stop(), internal?.stop()]);
  await Promise.all([origin?.stop(), privateOrigin?.stop()]);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('GET /v2/_catalog', () => {
  test('pages follow Link headers to the end and list every repository exactly once, sorted', async () => {
    const { pages, links } = await walk(mirror.url, '/v2/_catalog?n=2');
    assert.deepEqual(pages.flat(), PUBLIC_NAMES);
    assert.deepEqual(pages.map((p) => p.length), [2, 2, 2, 1]);
    assert.equal(links.length, 3, 'no Link on the last page');
    assert.equal(links[0], '</v2/_catalog?last=library%2Falpine&n=2>; rel="next"');
    // A page boundary falls between two names that share a prefix: nothing is skipped or repeated there.
    assert.deepEqual(pages[1], ['team/app-0', 'team/app-1']);
    // Without n, one page holds everything (up to the cap), with no Link.
    const whole = await get(`${mirror.url}/v2/_catalog`);
    assert.equal(whole.headers['link'], undefined);
    assert.deepEqual((JSON.parse(whole.body) as { repositories: string[] }).repositories, PUBLIC_NAMES);
  });

  test('names are the ones clients pull by: a second upstream behind its host, the private one behind its prefix', async () => {
    const all = await repositories({ authorization: `Bearer ${ADMIN_TOKEN}` });
    assert.deepEqual(all, [...PUBLIC_NAMES.slice(0, 1), SECRET_NAME, ...PUBLIC_NAMES.slice(1)]);
    for (const name of PUBLIC_NAMES) {
      const res = await get(`${mirror.url}/v2/${name}/manifests/v1`, { accept: MANIFEST_ACCEPT });
      assert.equal(res.status, 200, name);
      assert.equal(res.headers['x-cache'], 'HIT', `${name} is served from the cache under its listed name`);
    }
  });

  test('without adminToken, a loopback client is the admin (as for /admin) and sees restricted repositories', async () => {
    const raw = mirror.config;
    await mirror.close();
    const open = await startMirror({ upstreams: raw.upstreams, auth: { accessCheckTtlSeconds: 300, failClosed: true } }, mirror.cacheDir);
    try {
      assert.ok((await repositories({}, open.url)).includes(SECRET_NAME));
    } finally {
      await open.close();
      mirror = await startMirror({ upstreams: raw.upstreams, adminToken: ADMIN_TOKEN, auth: { accessCheckTtlSeconds: 300, failClosed: true } }, mirror.cacheDir);
    }
  });

  test('a restricted repository is hidden from anonymous clients, loopback without the token, a client that could read it, and a wrong token; shown to the admin', async () => {
    assert.ok(!(await repositories()).includes(SECRET_NAME), 'anonymous (and loopback: with adminToken set, only the token makes the admin)');
    assert.ok(!(await repositories({ authorization: basic(ALICE) })).includes(SECRET_NAME), 'a registry credential does not make the admin');
    assert.ok(!(await repositories({ authorization: `Bearer ${ADMIN_TOKEN}x` })).includes(SECRET_NAME), 'wrong token');
    assert.ok((await repositories({ authorization: `Bearer ${ADMIN_TOKEN}` })).includes(SECRET_NAME), 'the admin');
  });

  test('a bad n is 400 PAGINATION_NUMBER_INVALID; an n above the cap is lowered to it', async () => {
    for (const n of ['-1', 'abc', '2.5']) {
      const res = await get(`${mirror.url}/v2/_catalog?n=${n}`);
      assert.equal(res.status, 400, `n=${n}`);
      assert.equal(errorCode(res), 'PAGINATION_NUMBER_INVALID');
      assert.match(String(res.headers['content-type']), /application\/json/);
    }
    const big = await get(`${mirror.url}/v2/_catalog?n=100000`);
    assert.equal(big.status, 200);
    assert.deepEqual((JSON.parse(big.body) as { repositories: string[] }).repositories, PUBLIC_NAMES);
    const empty = await get(`${mirror.url}/v2/_catalog?n=0`);
    assert.deepEqual(JSON.parse(empty.body), { repositories: [] });
  });

  test('with htpasswd, the catalog needs a Gantry user like every /v2 route; the admin token stands in for one', async () => {
    const { default: bcrypt } = await import('bcryptjs');
    const htpasswd = join(tmp, 'htpasswd');
    await writeFile(htpasswd, `ops:${bcrypt.hashSync('ops-pw', 4)}\n`);
    const locked = await startMirror({ upstreams: [{ host: 'docker.io', url: hub.url }], adminToken: ADMIN_TOKEN, auth: { htpasswdFile: htpasswd } });
    extra.push(locked);
    const ops = basic({ username: 'ops', password: 'ops-pw' });
    assert.equal((await get(`${locked.url}/v2/library/alpine/manifests/v1`, { accept: MANIFEST_ACCEPT, authorization: ops })).status, 200);
    const anon = await get(`${locked.url}/v2/_catalog`);
    assert.equal(anon.status, 401);
    assert.match(String(anon.headers['www-authenticate']), /^Bearer realm=".*\/token"/);
    assert.equal((await get(`${locked.url}/v2/_catalog`, { authorization: basic({ username: 'ops', password: 'bad' }) })).status, 401);
    assert.deepEqual(JSON.parse((await get(`${locked.url}/v2/_catalog`, { authorization: ops })).body), { repositories: ['library/alpine'] });
    assert.deepEqual(JSON.parse((await get(`${locked.url}/v2/_catalog`, { authorization: `Bearer ${ADMIN_TOKEN}` })).body), { repositories: ['library/alpine'] });
  });
});

describe('GET /v2/<name>/tags/list', () => {
  test("relayed while the upstream answers (BYPASS, the upstream's whole list)", async () => {
    const before = hub.count({ pathIncludes: '/tags/list' });
    const res = await get(`${mirror.url}/v2/team/tagged/tags/list`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-cache'], 'BYPASS');
    assert.equal(res.headers['warning'], undefined);
    assert.deepEqual((JSON.parse(res.body) as { tags: string[] }).tags, ['v1', 'v2', 'v3', 'v4']);
    assert.equal(hub.count({ pathIncludes: '/tags/list' }), before + 1);
  });

  test('from the cache, marked stale, while the upstream is unreachable; paged by Link; uncached repositories still fail', async () => {
    hub.setTarget(DISCARD);
    try {
      const res = await get(`${mirror.url}/v2/team/tagged/tags/list`);
      assert.equal(res.status, 200, res.body);
      assert.equal(res.headers['x-cache'], 'STALE');
      assert.equal(res.headers['warning'], '110 - "Response is Stale"');
      assert.deepEqual(JSON.parse(res.body), { name: 'team/tagged', tags: ['v1', 'v2', 'v3'] }, 'what the cache holds: v4 was never pulled');
      const { pages, links } = await walk(mirror.url, '/v2/team/tagged/tags/list?n=2');
      assert.deepEqual(pages, [['v1', 'v2'], ['v3']]);
      assert.deepEqual(links, ['</v2/team/tagged/tags/list?last=v2&n=2>; rel="next"']);
      const bad = await get(`${mirror.url}/v2/team/tagged/tags/list?n=x`);
      assert.equal(bad.status, 400);
      assert.equal(errorCode(bad), 'PAGINATION_NUMBER_INVALID');
      const uncached = await get(`${mirror.url}/v2/never/pulled/tags/list`);
      assert.ok(uncached.status >= 500, `the upstream's error stands: ${uncached.status}`);
      assert.equal(errorCode(uncached), 'UNAVAILABLE');
    } finally {
      hub.setTarget(origin.url);
    }
  });

  test("a restricted repository's cached tags need the access check: the client the upstream accepted gets them, others are refused, with the upstream stopped", async () => {
    // While the upstream is up: alice's access is confirmed (and remembered), an anonymous client's refused (and remembered).
    const aliceHit = await pull(SECRET_NAME, 'v1', basic(ALICE));
    assert.equal(aliceHit.headers['x-cache'], 'HIT');
    assert.equal((await pull(SECRET_NAME, 'v1')).status, 401);
    await internal.stop();
    const alice = await get(`${mirror.url}/v2/${SECRET_NAME}/tags/list`, { authorization: basic(ALICE) });
    assert.equal(alice.status, 200, alice.body);
    assert.equal(alice.headers['x-cache'], 'STALE');
    assert.deepEqual(JSON.parse(alice.body), { name: SECRET_NAME, tags: ['v1'] });
    const anon = await get(`${mirror.url}/v2/${SECRET_NAME}/tags/list`);
    assert.equal(anon.status, 401, 'anonymous: refused as remembered');
    assert.ok(!anon.body.includes('"tags"'));
    const stranger = await get(`${mirror.url}/v2/${SECRET_NAME}/tags/list`, { authorization: basic({ username: 'mallory', password: 'x' }) });
    assert.equal(stranger.status, 503, 'a credential never checked: access cannot be confirmed, so no list (failClosed)');
    assert.equal(errorCode(stranger), 'UNAVAILABLE');
  });
});
