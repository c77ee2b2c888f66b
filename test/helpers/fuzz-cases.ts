/**
 * Deterministic generator of malformed HTTP requests for the fuzz test
 * (test/integration/fuzz.test.ts). Case `i` of seed `s` is always the same
 * bytes: every case gets its own PRNG seeded from (s, i), so the order in
 * which a concurrent runner asks for cases changes nothing.
 *
 * A case is raw bytes (no URL normalisation, no header validation) plus how
 * to end the exchange: most cases are complete requests ending with
 * `Connection: close`, so the server closes after answering; a case that is
 * deliberately incomplete (truncated, a body shorter than announced) half-closes
 * the socket so that a server that is still waiting sees the end of input
 * instead of waiting for its own request timeout.
 */

// ---------------------------------------------------------------------------------------------
// PRNG

/** mulberry32: tiny, fast, good enough for test-case selection. */
export class Rng {
  #s: number;

  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi] inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }

  /** Characters drawn from an alphabet. */
  chars(n: number, alphabet: string): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.next() * alphabet.length)];
    return s;
  }

  hex(n: number): string {
    return this.chars(n, '0123456789abcdef');
  }
}

/** FNV-1a over a string: turns (seed, index) into a 32-bit PRNG seed. */
export function hashSeed(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Cases

export const CATEGORIES = [
  'bad-name',
  'traversal',
  'bad-digest',
  'bad-tag',
  'bad-reference',
  'bad-range',
  'odd-method',
  'huge-headers',
  'huge-url',
  'bad-request-line',
  'truncated',
  'bad-chunked',
  'cl-te-conflict',
  'body-on-get',
  'invalid-utf8',
  'ns-query',
  'accept-junk',
  'auth-junk',
  'request-id-junk',
  'host-junk',
  'pipelined',
  'token-endpoint',
  'tls-hello',
  'mutated-valid',
  'random-bytes',
] as const;
export type Category = (typeof CATEGORIES)[number] | 'regression';

export type FuzzCase = {
  index: number;
  category: Category;
  /** What the case is, for reports. */
  label: string;
  /** Written in order, one write per chunk with a short pause between (exercises parser state across reads). */
  chunks: Buffer[];
  /** Half-close our side this many ms after the last write; undefined: never (the request is complete). */
  halfCloseAfterMs: number | undefined;
  /**
   * Method of each request in the bytes, in order (HEAD responses carry no body).
   * The exchange is over once this many complete responses arrived, or the server closed.
   */
  methods: string[];
};

/** What the generated requests aim at: the image pushed to the upstream, and a marker for traversal targets. */
export type FuzzTarget = {
  /** Repository the fixture image lives in, e.g. `fuzz/img`. */
  repo: string;
  tag: string;
  manifestDigest: string;
  /** Digests of blobs that exist upstream (config and layers). */
  blobDigests: string[];
  /** The upstream's configured host (`127.0.0.1:PORT`), valid in `?ns=` and as a path prefix. */
  upstreamHost: string;
  /** A file name no legitimate request would create: traversal payloads aim at it, the test looks for it afterwards. */
  marker: string;
};

type Part = string | Buffer;

/** Concatenate parts; strings are taken byte-for-byte (latin1), so any byte can be written. */
export function bytes(...parts: Part[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));
}

/** UTF-8 encoding of real Unicode text (for names and headers that should carry it). */
function utf8(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

type Header = [string, Part];

type RequestSpec = {
  method?: string;
  target: Part;
  version?: string;
  headers?: Header[];
  /** Default: Host + Connection: close, then the given headers. */
  noDefaultHeaders?: boolean;
  keepAlive?: boolean;
  body?: Part;
};

/** One HTTP/1.1 request as raw bytes. */
export function request(spec: RequestSpec): Buffer {
  const lines: Part[] = [spec.method ?? 'GET', ' ', spec.target, ' ', spec.version ?? 'HTTP/1.1', '\r\n'];
  if (!spec.noDefaultHeaders) {
    lines.push('Host: 127.0.0.1\r\n');
    if (!spec.keepAlive) lines.push('Connection: close\r\n');
  }
  for (const [k, v] of spec.headers ?? []) lines.push(k, ': ', v, '\r\n');
  lines.push('\r\n');
  if (spec.body !== undefined) lines.push(spec.body);
  return bytes(...lines);
}

type Draft = { label: string; chunks: Buffer[]; halfCloseAfterMs?: number; methods?: string[] };

/** A complete, single request. */
function one(label: string, spec: RequestSpec): Draft {
  return { label, chunks: [request(spec)], methods: [spec.method ?? 'GET'] };
}

const HEX64 = (rng: Rng): string => rng.hex(64);
const SHA = (rng: Rng): string => `sha256:${HEX64(rng)}`;

function blobOf(t: FuzzTarget, rng: Rng): string {
  return rng.pick(t.blobDigests);
}

/** A random API suffix after a name: manifests/<tag>, blobs/<digest>, tags/list or referrers/<digest>. */
function apiSuffix(t: FuzzTarget, rng: Rng): string {
  switch (rng.int(0, 4)) {
    case 0:
      return `manifests/${t.tag}`;
    case 1:
      return `manifests/${t.manifestDigest}`;
    case 2:
      return `blobs/${blobOf(t, rng)}`;
    case 3:
      return 'tags/list';
    default:
      return `referrers/${t.manifestDigest}`;
  }
}

const GET_OR_HEAD = (rng: Rng): string => (rng.chance(0.8) ? 'GET' : 'HEAD');

// ---------------------------------------------------------------------------------------------
// Generators, one per category

const TRAVERSALS = [
  '..', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '%252e%252e', '..%2f', '%2f..', '..%5c', '%5c..', '%c0%ae%c0%ae',
  '%e0%80%ae%e0%80%ae', '..;', '..%00', '%00..', '.%00.', '..\\', '\\..', '%u002e%u002e', '....', '.', '%2e',
  '..%252f', '%2e%2e%2f%2e%2e', '..%c0%af', '..%ef%bc%8f', '%ef%bc%8e%ef%bc%8e',
];

function traversalPayload(rng: Rng, t: FuzzTarget): string {
  const dots = rng.pick(TRAVERSALS);
  const sep = rng.pick(['/', '%2f', '%2F', '%5c', '\\', '%252f', '/./', '//']);
  const depth = rng.int(1, 8);
  const tail = rng.pick([t.marker, `tmp${sep}${t.marker}`, `etc${sep}passwd`, `blobs${sep}sha256${sep}${t.marker}`, '']);
  return Array.from({ length: depth }, () => dots).join(sep) + sep + tail;
}

function genBadName(rng: Rng, t: FuzzTarget): Draft {
  const bad = rng.pick([
    () => 'UPPER/case', () => 'Library/Alpine', () => 'a//b', () => '/a', () => 'a/', () => '', () => '//',
    () => 'a'.repeat(300), () => `${'a'.repeat(250)}/${'b'.repeat(10)}`, () => `${'ab/'.repeat(100)}c`,
    () => 'a'.repeat(256), () => 'a'.repeat(255),
    () => 'caf%C3%A9/x', () => 'caf\xc3\xa9/x', () => '%F0%9F%90%B3', () => '\xf0\x9f\x90\xb3/whale', () => '%EF%BC%A1',
    () => `a%${rng.pick(['00', '01', '07', '08', '09', '0a', '0d', '1b', '1f', '7f'])}b`,
    () => '..', () => 'a/../b', () => '%2e%2e/x', () => 'a%2fb', () => 'a%2Fb/c', () => 'a%00', () => '%00',
    () => 'a\\b', () => 'a%5cb', () => '\\\\server\\share', () => 'a/./b', () => './a',
    () => '-a', () => 'a-', () => '_a', () => 'a_', () => 'a___b', () => 'a..b', () => 'a.', () => '.a',
    () => '%61%62', () => 'a%20b', () => 'a+b', () => 'a;b', () => 'a,b', () => 'a@b', () => 'a:b', () => 'a%3ab',
    () => 'a*b', () => 'a~b', () => 'a!b', () => "a'b", () => 'a$b', () => 'a(b)', () => 'a=b',
    () => 'Evil.example:443/x', () => 'evil.example:99999/x', () => 'evil.example:/x', () => ':5000/x',
    () => `${t.upstreamHost}/`, () => `${t.upstreamHost}`, () => `${t.upstreamHost}/UPPER`, () => `${t.upstreamHost}/${t.upstreamHost}/x`,
    () => `${rng.chars(rng.int(1, 40), 'abcdefghijklmnopqrstuvwxyz0123456789._-/')}`,
    () => `${rng.chars(rng.int(1, 40), 'abcXYZ012._-/%:@!~*')}`,
    () => Array.from({ length: rng.int(50, 130) }, () => 'a').join('/'),
  ])();
  const method = GET_OR_HEAD(rng);
  return one(`name ${JSON.stringify(bad.slice(0, 60))}`, { method, target: bytes('/v2/', bad, '/', apiSuffix(t, rng)) });
}

function genTraversal(rng: Rng, t: FuzzTarget): Draft {
  const p = traversalPayload(rng, t);
  const name = t.repo;
  const targets = [
    `/v2/${p}`,
    `/v2/${p}/manifests/${t.tag}`,
    `/v2/${name}/${p}/manifests/${t.tag}`,
    `/v2/${p}/${name}/manifests/${t.tag}`,
    `/v2/${name}/manifests/${p}`,
    `/v2/${name}/manifests/${t.tag}/${p}`,
    `/v2/${name}/blobs/${p}`,
    `/v2/${name}/blobs/sha256:${p}`,
    `/v2/${name}/blobs/sha256:${rng.hex(rng.int(0, 64))}${p}`,
    `/v2/${name}/blobs/${blobOf(t, rng)}/${p}`,
    `/v2/${name}/blobs/uploads/${p}`,
    `/v2/${name}/tags/${p}`,
    `/v2/${name}/referrers/${p}`,
    `/v2/${name}/${p}/blobs/${blobOf(t, rng)}`,
    `/${p}/v2/${name}/manifests/${t.tag}`,
    `/v2/${name}/manifests/${t.tag}?ns=${p}`,
    `/v2/${name}/blobs/${blobOf(t, rng)}?${p}`,
    `/v2/${t.upstreamHost}/${p}/manifests/${t.tag}`,
    `/token?scope=repository:${p}:pull`,
    `/v2/_catalog/${p}`,
    `/%76%32/${name}/manifests/${t.tag}`,
    `/v2%2f${name}%2fmanifests%2f${t.tag}`,
    `/metrics/${p}`,
  ];
  const target = rng.pick(targets);
  return one(`traversal ${target.slice(0, 100)}`, { method: rng.pick(['GET', 'GET', 'HEAD', 'PUT', 'DELETE']), target });
}

function badDigest(rng: Rng, t: FuzzTarget): string {
  const good = blobOf(t, rng);
  const hex = good.slice('sha256:'.length);
  return rng.pick([
    () => `md5:${rng.hex(32)}`, () => `sha1:${rng.hex(40)}`, () => `sha384:${rng.hex(96)}`, () => `sha512:${rng.hex(64)}`,
    () => `sha512:${rng.hex(128)}`, () => `sha256:${rng.hex(63)}`, () => `sha256:${rng.hex(65)}`, () => `sha256:${hex.toUpperCase()}`,
    () => `SHA256:${hex}`, () => 'sha256:', () => '::', () => ':', () => `sha256::${hex}`, () => `:${hex}`, () => `sha256:${hex}:`,
    () => `sha256:${'a'.repeat(300)}`, () => `sha256:${'a'.repeat(10_000)}`, () => `${'a'.repeat(200)}:${hex}`,
    () => `sha256:${'g'.repeat(64)}`, () => `sha256:${hex.slice(0, 60)}zzzz`, () => `sha256+b64:${hex}`, () => `sha256.x:${hex}`,
    () => `sha256%3a${hex}`, () => `sha256%3A${hex}`, () => `%73ha256:${hex}`, () => `sha256:${hex}%00`, () => `sha256:%00${hex.slice(1)}`,
    () => ` sha256:${hex}`, () => `sha256:${hex}%20`, () => `sha256:${hex};x`, () => `sha256:${hex}#frag`, () => hex,
    () => `sha256:-${hex.slice(1)}`, () => `sha256:=${hex.slice(1)}`, () => `sha256:${hex.slice(0, 32)}_${hex.slice(33)}`,
    () => `sha256:${rng.hex(rng.int(1, 200))}`, () => `${rng.chars(rng.int(1, 20), 'abc+._-:0')}:${rng.hex(64)}`,
    () => `sha256:\xc3\xa9${hex.slice(2)}`, () => `sha256:${hex}?digest=${hex}`,
  ])();
}

function genBadDigest(rng: Rng, t: FuzzTarget): Draft {
  const d = badDigest(rng, t);
  const route = rng.pick(['blobs', 'manifests', 'referrers']);
  const method = GET_OR_HEAD(rng);
  return one(`digest ${route} ${JSON.stringify(d.slice(0, 80))}`, { method, target: `/v2/${t.repo}/${route}/${d}` });
}

function genBadTag(rng: Rng, t: FuzzTarget): Draft {
  const tag = rng.pick([
    () => 'a'.repeat(129), () => 'a'.repeat(128), () => '-tag', () => '.tag', () => 'ta+g', () => 'ta%g', () => 'ta%25g',
    () => 'caf%C3%A9', () => 'caf\xc3\xa9', () => '', () => `${t.tag}/extra`, () => `${t.tag}/`, () => `@${t.manifestDigest}`,
    () => `${t.tag}@${t.manifestDigest}`, () => 'la:test', () => '%20', () => '..', () => '.', () => 'tag%00', () => 'tag%0d%0aX-Injected:1',
    () => 'tag%0a', () => 'TAG', () => 'latest ', () => 'la test', () => 'tag;x', () => 'tag,x', () => 'tag*', () => 'a'.repeat(10_000),
    () => rng.chars(rng.int(1, 140), 'abcXYZ019._-'), () => rng.chars(rng.int(1, 30), 'abc._-%~!$&()*+,;=@'),
  ])();
  return one(`tag ${JSON.stringify(tag.slice(0, 60))}`, { method: GET_OR_HEAD(rng), target: bytes(`/v2/${t.repo}/manifests/`, tag) });
}

function genBadReference(rng: Rng, t: FuzzTarget): Draft {
  const d = t.manifestDigest;
  const ref = rng.pick([
    () => `${t.tag}@${d}`, () => `${t.tag}:${d}`, () => `${d}@${t.tag}`, () => `${d}:${t.tag}`, () => `${d}/${t.tag}`, () => `tag:with:colons`,
    () => `sha256:abc:def`, () => `${t.tag}#frag`, () => `${t.tag};param=1`, () => `${t.tag}?x=1`, () => `${d}?ns=`, () => `${t.tag}%3f`,
    () => `${t.tag}%23`, () => `${t.tag}%2f${t.tag}`, () => `manifests/${t.tag}`, () => `${t.tag}/manifests/${t.tag}`, () => 'list',
    () => `${d.toUpperCase()}`, () => `sha256:${d.slice(7, 40)}`, () => 'latest@', () => '@', () => ':', () => `:${t.tag}`,
  ])();
  const route = rng.pick(['manifests', 'manifests', 'blobs', 'tags', 'referrers']);
  const prefix = rng.pick([`/v2/${t.repo}`, `/v2/${t.repo}/manifests/${t.tag}/v2/${t.repo}`, `/v2/${t.upstreamHost}/${t.repo}`, `/v2/manifests/x/${t.repo}`]);
  return one(`reference ${route} ${JSON.stringify(ref.slice(0, 60))}`, { method: GET_OR_HEAD(rng), target: `${prefix}/${route}/${ref}` });
}

function genBadRange(rng: Rng, t: FuzzTarget): Draft {
  const big = '9'.repeat(rng.int(16, 400));
  const range = rng.pick([
    () => 'bytes=-', () => 'bytes=5-1', () => 'bytes=0-1,2-3', () => 'bytes=0-0,-1', () => `bytes=${big}-`, () => `bytes=0-${big}`,
    () => `bytes=-${big}`, () => 'bytes=-1-2', () => 'bytes=--1', () => 'bytes=-0', () => 'bytes=0--1', () => 'items=0-1', () => 'bytes 0-1',
    () => 'bytes=0x10-0x20', () => 'bytes=1e3-', () => 'bytes=1.5-2', () => 'bytes=+1-2', () => 'bytes=\t0-1', () => 'bytes=0-1 ,',
    () => 'bytes=', () => '=', () => 'bytes', () => '', () => 'BYTES=0-1', () => 'bytes=0-1;q=1', () => 'bytes=0-1\t', () => 'bytes=٣-٤',
    () => `bytes=${'0-1,'.repeat(rng.int(100, 3000))}0-1`, () => `bytes=${' '.repeat(rng.int(1, 64))}0${' '.repeat(rng.int(1, 64))}-${' '.repeat(rng.int(1, 64))}1`,
    () => `bytes=${rng.int(0, 1 << 20)}-${rng.int(0, 1 << 20)}`, () => `bytes=${rng.int(0, 1 << 20)}-`, () => `bytes=-${rng.int(0, 1 << 20)}`,
    () => `bytes=${Number.MAX_SAFE_INTEGER}-`, () => `bytes=${Number.MAX_SAFE_INTEGER + 2}-${Number.MAX_SAFE_INTEGER + 10}`,
    () => `bytes=0-${2 ** 53}`, () => 'bytes=0-1\xff', () => 'bytes=0-1,'.repeat(1000),
  ])();
  const headers: Header[] = [['Range', range]];
  if (rng.chance(0.15)) headers.push(['Range', 'bytes=0-1']); // duplicate Range
  if (rng.chance(0.1)) headers.push(['If-Range', rng.pick(['"junk"', 'Wed, 21 Oct 2015 07:28:00 GMT', '\xff\xfe', `"${t.manifestDigest}"`])]);
  const target = rng.chance(0.85) ? `/v2/${t.repo}/blobs/${blobOf(t, rng)}` : `/v2/${t.repo}/manifests/${t.tag}`;
  const method = rng.chance(0.9) ? 'GET' : 'HEAD';
  return one(`range ${JSON.stringify(range.slice(0, 60))} on ${target.includes('/blobs/') ? 'blob' : 'manifest'}`, { method, target, headers });
}

function genOddMethod(rng: Rng, t: FuzzTarget): Draft {
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/', '/token', '/metrics', '/healthz', `/v2/${t.repo}/blobs/uploads/`, '*']);
  const method = rng.pick([
    'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'TRACE', 'OPTIONS', 'PUT', 'POST', 'DELETE', 'PATCH',
    'SEARCH', 'REPORT', 'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'PURGE', 'LINK',
    'UNLINK', 'BIND', 'REBIND', 'UNBIND', 'ACL', 'SOURCE', 'QUERY', 'get', 'Get', 'head', 'gEt', 'G3T', 'FOO', 'GETX', 'GE',
    'GET\tX', 'GET\x00', '\x00', 'X'.repeat(rng.int(20, 2000)), 'PRI', 'HTTP/1.1', '-', '"GET"', rng.chars(rng.int(1, 12), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ_-!#$%&*+.^`|~'),
  ]);
  if (method === 'CONNECT' || rng.chance(0.05)) {
    return one('CONNECT authority-form', { method: 'CONNECT', target: rng.pick(['127.0.0.1:1', 'evil.example:443', '/v2/', t.upstreamHost]) });
  }
  const body = ['PUT', 'POST', 'PATCH', 'PROPFIND', 'QUERY'].includes(method) && rng.chance(0.5) ? rng.bytes(rng.int(0, 2048)) : undefined;
  const headers: Header[] = body ? [['Content-Length', String(body.length)]] : [];
  return one(`method ${JSON.stringify(method.slice(0, 30))} ${target.slice(0, 60)}`, { method, target, headers, ...(body ? { body } : {}) });
}

function genHugeHeaders(rng: Rng, t: FuzzTarget): Draft {
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/']);
  const kind = rng.int(0, 7);
  let headers: Header[];
  let label: string;
  switch (kind) {
    case 0:
      headers = [['X-Big', 'a'.repeat(64 * 1024)]];
      label = 'one 64 KiB header';
      break;
    case 1:
      headers = Array.from({ length: 500 }, (_, i) => [`X-H${i}`, rng.hex(8)] as Header);
      label = '500 headers';
      break;
    case 2:
      headers = Array.from({ length: 2500 }, (_, i) => [`X${i}`, 'v'] as Header);
      label = '2500 headers';
      break;
    case 3:
      headers = [['X-Edge', 'b'.repeat(rng.int(15_000, 17_000))]];
      label = 'header near the 16 KiB limit';
      break;
    case 4:
      headers = [[`X-${'n'.repeat(rng.int(1000, 20_000))}`, '1']];
      label = 'huge header name';
      break;
    case 5:
      headers = Array.from({ length: rng.int(100, 600) }, () => ['Accept', 'application/vnd.oci.image.manifest.v1+json'] as Header);
      label = 'hundreds of Accept lines';
      break;
    case 6:
      headers = Array.from({ length: 300 }, () => ['Cookie', `c=${rng.hex(40)}`] as Header);
      label = '300 Cookie lines';
      break;
    default:
      headers = [['X-Folded', 'a'], [' continued', 'b'], ['\tmore', 'c']];
      label = 'obsolete line folding';
  }
  return one(label, { method: GET_OR_HEAD(rng), target, headers });
}

function genHugeUrl(rng: Rng, t: FuzzTarget): Draft {
  const kind = rng.int(0, 5);
  const size = kind < 2 ? 100 * 1024 : rng.int(8_000, 16_000);
  let target: string;
  switch (kind) {
    case 0:
      target = `/v2/${'a/'.repeat(size / 2)}manifests/${t.tag}`;
      break;
    case 1:
      target = `/v2/${t.repo}/manifests/${t.tag}?ns=${'x'.repeat(size)}`;
      break;
    case 2:
      target = `/v2/${'a'.repeat(size)}/manifests/${t.tag}`;
      break;
    case 3:
      target = `/v2/${t.repo}/blobs/${blobOf(t, rng)}?${'q=1&'.repeat(size / 4)}`;
      break;
    case 4:
      target = `/v2/${'%2e%2e/'.repeat(size / 7)}manifests/${t.tag}`;
      break;
    default:
      target = `/v2/${t.repo}/manifests/${'t'.repeat(size)}`;
  }
  return one(`URL of ${target.length} bytes (kind ${kind})`, { method: GET_OR_HEAD(rng), target });
}

function genBadRequestLine(rng: Rng, t: FuzzTarget): Draft {
  const path = `/v2/${t.repo}/manifests/${t.tag}`;
  const line = rng.pick([
    `GET ${path}\r\n\r\n`, `GET ${path}\r\nHost: x\r\n\r\n`, `GET ${path} HTTP/0.9\r\nHost: x\r\n\r\n`, `GET ${path} HTTP/3.0\r\nHost: x\r\n\r\n`,
    `GET ${path} HTTP/2.0\r\nHost: x\r\n\r\n`, `GET ${path} HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1\r\nHost: x\r\n\r\n`,
    `GET ${path} HTTP/11.1\r\nHost: x\r\n\r\n`, `GET ${path} http/1.1\r\nHost: x\r\n\r\n`, `GET ${path} HTTP/1.1 extra\r\nHost: x\r\n\r\n`,
    `GET  ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, ` GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, `GET\t${path}\tHTTP/1.1\r\nHost: x\r\n\r\n`,
    `GET ${path}  HTTP/1.1\r\nHost: x\r\n\r\n`, `GET  HTTP/1.1\r\nHost: x\r\n\r\n`, `GET HTTP/1.1\r\nHost: x\r\n\r\n`, `GET\r\n\r\n`,
    `\r\n\r\nGET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1.1\nHost: x\nConnection: close\n\n`,
    `GET ${path} HTTP/1.1\rHost: x\r\r`, `GET http://evil.example/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET http://127.0.0.1${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET https://x/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET ftp://x/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1.1\r\nConnection: close\r\n\r\n`,
    `GET ${path} HTTP/1.0\r\n\r\n`, `GET /v2/#frag HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET /v2/% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\n: empty-name\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1.1\r\nNoColon\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\nHost : x\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1.1\r\nHo\x00st: x\r\nConnection: close\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\nHost: x\x00y\r\nConnection: close\r\n\r\n`, `GET ${path} HTTP/1.1\r\nX: a\rb\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/\x01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET /v2/\x7f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/ a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET /v2/"<script> HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, `GET /v2/|^\` HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: something-odd\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
    `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`,
  ]);
  return { label: `request line ${JSON.stringify(line.slice(0, 70))}`, chunks: [bytes(line)], halfCloseAfterMs: 300, methods: [line.trimStart().split(/[ \t\r\n]/)[0] ?? ''] };
}

function genTruncated(rng: Rng, t: FuzzTarget): Draft {
  const kind = rng.int(0, 4);
  if (kind === 0) {
    const full = request({ target: `/v2/${t.repo}/manifests/${t.tag}`, headers: [['Accept', 'application/json'], ['X-Request-Id', 'trunc']] });
    const cut = rng.int(0, full.length - 3); // never the whole head: always mid-headers
    return { label: `closed after ${cut} of ${full.length} head bytes`, chunks: cut === 0 ? [] : [full.subarray(0, cut)], halfCloseAfterMs: 0, methods: ['GET'] };
  }
  if (kind === 1) {
    const head = request({ method: rng.pick(['POST', 'PUT', 'GET']), target: rng.pick(['/token', `/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/uploads/`]), headers: [['Transfer-Encoding', 'chunked'], ['Content-Type', 'application/x-www-form-urlencoded']] });
    const body = bytes('a\r\ngrant_type\r\n', rng.pick(['', '5\r\n=pass', '10\r\n', 'ff\r\nabc', '5\r\n=pass\r\n0\r\n']));
    return { label: 'closed mid-chunked-body', chunks: [head, body], halfCloseAfterMs: 0, methods: ['POST'] };
  }
  if (kind === 2) {
    const n = rng.int(10, 100_000);
    const head = request({ method: rng.pick(['POST', 'PUT', 'PATCH']), target: rng.pick(['/token', `/v2/${t.repo}/blobs/uploads/x`]), headers: [['Content-Length', String(n)]] });
    return { label: `closed after ${Math.floor(n / 2)} of ${n} body bytes`, chunks: [head, Buffer.alloc(Math.floor(n / 2), 0x61)], halfCloseAfterMs: 0, methods: ['POST'] };
  }
  if (kind === 3) {
    const full = request({ target: `/v2/${t.repo}/blobs/${blobOf(t, rng)}` });
    const cut = rng.int(1, full.length - 3);
    // Dribbled one byte at a time, then closed.
    return { label: `dribbled ${cut} bytes then closed`, chunks: Array.from(full.subarray(0, Math.min(cut, 40)), (b) => Buffer.from([b])), halfCloseAfterMs: 0, methods: ['GET'] };
  }
  const full = request({ target: `/v2/${t.repo}/manifests/${t.tag}` });
  return { label: 'headers without the final CRLF, then closed', chunks: [full.subarray(0, full.length - 2)], halfCloseAfterMs: rng.int(0, 50), methods: ['GET'] };
}

function genBadChunked(rng: Rng, t: FuzzTarget): Draft {
  const body = rng.pick([
    'zz\r\nabc\r\n0\r\n\r\n', 'ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n', '3\r\nabcdef\r\n0\r\n\r\n', '-1\r\nabc\r\n0\r\n\r\n', '0x3\r\nabc\r\n0\r\n\r\n',
    `3;${'e'.repeat(rng.int(1000, 40_000))}\r\nabc\r\n0\r\n\r\n`, '3\r\nabc\r\n0\r\nX-Trailer: a\r\nBad Trailer\r\n\r\n', '3\nabc\n0\n\n',
    '3\r\nabc0\r\n\r\n', ' 3\r\nabc\r\n0\r\n\r\n', '3 \r\nabc\r\n0\r\n\r\n', '\r\n', '0\r\n\r\ngarbage', '3\r\nabc\r\n',
    `${'0'.repeat(200)}3\r\nabc\r\n0\r\n\r\n`, '3;a=b;c="d\r\nabc\r\n0\r\n\r\n', '1\r\n\xff\r\n0\r\n\r\n',
  ]);
  const method = rng.pick(['POST', 'PUT', 'GET', 'PATCH']);
  const target = rng.pick(['/token', `/v2/${t.repo}/blobs/uploads/`, `/v2/${t.repo}/manifests/${t.tag}`]);
  const te = rng.pick(['chunked', 'Chunked', 'CHUNKED', 'gzip, chunked', 'chunked, gzip', 'identity, chunked']);
  return {
    label: `chunked (${te}) ${JSON.stringify(body.slice(0, 40))} to ${method} ${target.slice(0, 40)}`,
    chunks: [request({ method, target, headers: [['Transfer-Encoding', te]] }), bytes(body)],
    halfCloseAfterMs: 300,
    methods: [method],
  };
}

function genClTeConflict(rng: Rng, t: FuzzTarget): Draft {
  const method = rng.pick(['POST', 'GET', 'PUT']);
  const target = rng.pick(['/token', `/v2/${t.repo}/manifests/${t.tag}`, '/v2/']);
  const smuggled = `GET /v2/${t.repo}/blobs/${blobOf(t, rng)} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const variants: Array<[string, Header[], string]> = [
    ['CL and TE', [['Content-Length', '4'], ['Transfer-Encoding', 'chunked']], `0\r\n\r\n${smuggled}`],
    ['TE and CL', [['Transfer-Encoding', 'chunked'], ['Content-Length', '50']], `0\r\n\r\n${smuggled}`],
    ['two different CL', [['Content-Length', '5'], ['Content-Length', '6']], 'abcdef'],
    ['two equal CL', [['Content-Length', '3'], ['Content-Length', '3']], 'abc'],
    ['CL list', [['Content-Length', '3, 3']], 'abc'],
    ['CL negative', [['Content-Length', '-1']], 'a'],
    ['CL huge', [['Content-Length', '99999999999999999999999']], 'a'],
    ['CL plus', [['Content-Length', '+3']], 'abc'],
    ['CL hex', [['Content-Length', '0x3']], 'abc'],
    ['CL float', [['Content-Length', '3.0']], 'abc'],
    ['CL junk', [['Content-Length', 'abc']], 'abc'],
    ['TE unknown', [['Transfer-Encoding', 'xchunked']], '3\r\nabc\r\n0\r\n\r\n'],
    ['TE space before colon', [['Transfer-Encoding ', 'chunked']], '3\r\nabc\r\n0\r\n\r\n'],
    ['TE twice', [['Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'chunked']], '3\r\nabc\r\n0\r\n\r\n'],
    ['TE identity', [['Transfer-Encoding', 'identity']], 'abc'],
    ['TE with tab', [['Transfer-Encoding', '\tchunked']], '3\r\nabc\r\n0\r\n\r\n'],
    ['TE vertical tab', [['Transfer-Encoding', 'chunked\x0b']], '3\r\nabc\r\n0\r\n\r\n'],
    ['CL then smuggled request', [['Content-Length', '0']], smuggled],
  ];
  const [label, headers, body] = rng.pick(variants);
  return { label: `${label}: ${method} ${target.slice(0, 40)}`, chunks: [request({ method, target, headers }), bytes(body)], halfCloseAfterMs: 300, methods: [method, 'GET'] };
}

function genBodyOnGet(rng: Rng, t: FuzzTarget): Draft {
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/', '/healthz', '/token']);
  const n = rng.pick([1, 10, 1000, 65_536, 1 << 20]);
  const body = rng.bytes(n);
  const method = rng.chance(0.8) ? 'GET' : 'HEAD';
  if (rng.chance(0.3)) {
    // Keep-alive with a body, then a second request on the same connection: the body must be skipped, not parsed as a request.
    const first = request({ method, target, keepAlive: true, headers: [['Content-Length', String(n)]], body });
    const second = request({ target: '/v2/' });
    return { label: `${method} with ${n}-byte body, then a pipelined GET /v2/`, chunks: [first, second], methods: [method, 'GET'] };
  }
  if (rng.chance(0.3)) {
    const chunked = bytes(n.toString(16), '\r\n', body, '\r\n0\r\n\r\n');
    return { label: `${method} with a ${n}-byte chunked body`, chunks: [request({ method, target, headers: [['Transfer-Encoding', 'chunked']] }), chunked], methods: [method] };
  }
  return { label: `${method} ${target.slice(0, 40)} with ${n}-byte body`, chunks: [request({ method, target, headers: [['Content-Length', String(n)]], body })], methods: [method] };
}

const BAD_UTF8 = ['\xff', '\xfe\xff', '\xc0\xaf', '\xc0\xae', '\xed\xa0\x80', '\xf4\x90\x80\x80', '\xe2\x82', '\x80', '\xf8\x88\x80\x80\x80', '\xc3'];

function genInvalidUtf8(rng: Rng, t: FuzzTarget): Draft {
  const b = rng.pick(BAD_UTF8);
  const enc = Array.from(Buffer.from(b, 'latin1'), (x) => `%${x.toString(16).padStart(2, '0')}`).join('');
  const where = rng.int(0, 8);
  const name = t.repo;
  switch (where) {
    case 0:
      return one('raw invalid UTF-8 in the name', { target: `/v2/${name}${b}/manifests/${t.tag}` });
    case 1:
      return one('percent-encoded invalid UTF-8 in the name', { target: `/v2/${name}${enc}/manifests/${t.tag}` });
    case 2:
      return one('percent-encoded invalid UTF-8 in ns', { target: `/v2/${name}/manifests/${t.tag}?ns=${enc}` });
    case 3:
      return one('raw invalid UTF-8 in ns', { target: `/v2/${name}/manifests/${t.tag}?ns=${b}` });
    case 4:
      return one('invalid UTF-8 in Accept', { target: `/v2/${name}/manifests/${t.tag}`, headers: [['Accept', `application/${b}json`]] });
    case 5:
      return one('invalid UTF-8 in Authorization', { target: `/v2/${name}/manifests/${t.tag}`, headers: [['Authorization', `Bearer ${b}`]] });
    case 6:
      return one('invalid UTF-8 in the tag', { target: `/v2/${name}/manifests/${rng.chance(0.5) ? b : enc}` });
    case 7:
      return one('invalid UTF-8 in a token scope', { target: `/token?scope=repository:${enc}:pull&service=${enc}` });
    default:
      return one('invalid UTF-8 in X-Request-Id and Host', { target: '/v2/', noDefaultHeaders: true, headers: [['Host', `h${b}`], ['X-Request-Id', b], ['Connection', 'close']] });
  }
}

function genNsQuery(rng: Rng, t: FuzzTarget): Draft {
  const ns = rng.pick([
    '', 'junk', 'docker.io', 'registry-1.docker.io', 'evil.example', '127.0.0.1:1', 'localhost', '[::1]:5000', 'http://x', t.upstreamHost,
    t.upstreamHost.toUpperCase(), `${t.upstreamHost}/`, `${t.upstreamHost}%00`, `${t.upstreamHost}%20`, 'x'.repeat(rng.int(256, 12_000)),
    '%00', '%2e%2e%2f%2e%2e', '..', '%0d%0aX-Injected:%201', '%E2%98%83', '%', '%zz', 'a&ns=b', `${t.upstreamHost}&ns=evil.example`,
    '169.254.169.254', '0.0.0.0:80', '[fe80::1%25eth0]', 'user@evil.example', 'evil.example#',
  ]);
  const repo = rng.pick([t.repo, `${t.upstreamHost}/${t.repo}`, 'UPPER', 'a//b']);
  const extra = rng.pick(['', '&ns', '&ns=', `&n=${rng.pick(['-1', '0', '1e9', 'x', '99999999999999999999'])}`, `&last=${rng.hex(300)}`, '&artifactType=%00', '&&&', '&=', '&ns=a=b']);
  const route = rng.pick([`manifests/${t.tag}`, `blobs/${blobOf(t, rng)}`, 'tags/list', `referrers/${t.manifestDigest}`]);
  return one(`ns=${JSON.stringify(ns.slice(0, 50))}${extra.slice(0, 30)} ${route.slice(0, 20)}`, { method: GET_OR_HEAD(rng), target: `/v2/${repo}/${route}?ns=${ns}${extra}` });
}

function genAcceptJunk(rng: Rng, t: FuzzTarget): Draft {
  const accept = rng.pick([
    () => 'a'.repeat(rng.int(1000, 15_000)), () => Array.from({ length: rng.int(100, 1500) }, () => 'application/x').join(', '), () => '*/*;q=x',
    () => ';;;;', () => ',,,,', () => '', () => ' ', () => 'application/vnd.oci.image.manifest.v1+json;q=0', () => '*/*;q=0',
    () => 'application/vnd.oci.image.index.v1+json;q=0, application/vnd.oci.image.manifest.v1+json;q=0, application/vnd.docker.distribution.manifest.v2+json;q=0, application/vnd.docker.distribution.manifest.list.v2+json;q=0',
    () => 'text/html', () => 'application/json', () => 'application/*', () => '*/*', () => '*', () => '/', () => 'application/vnd.docker.distribution.manifest.v1+prettyjws',
    () => 'application/vnd.oci.image.manifest.v1+json; charset=\xff', () => `${'a/b;'.repeat(2000)}`, () => 'application/vnd.oci.image.manifest.v1+json;q=1e309',
    () => rng.chars(rng.int(1, 200), 'abc/*;=,q. 0123+'),
  ])();
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/manifests/${t.manifestDigest}`, `/v2/${t.repo}/tags/list`, `/v2/${t.repo}/referrers/${t.manifestDigest}`]);
  return one(`Accept ${JSON.stringify(accept.slice(0, 60))} (${accept.length} bytes)`, { method: GET_OR_HEAD(rng), target, headers: [['Accept', accept]] });
}

function genAuthJunk(rng: Rng, t: FuzzTarget): Draft {
  const auth = rng.pick([
    () => 'Bearer', () => 'Bearer ', () => 'Bearer  ', () => 'Basic !!!', () => 'Basic', () => 'Basic ', () => `Basic ${Buffer.from('nocolon').toString('base64')}`,
    () => `Basic ${Buffer.from(':').toString('base64')}`, () => `Basic ${Buffer.from('u:p').toString('base64')}`, () => `Basic ${Buffer.from('\xff:\xfe', 'latin1').toString('base64')}`,
    () => `Bearer ${'x'.repeat(10 * 1024)}`, () => `Basic ${'A'.repeat(10 * 1024)}`, () => 'x'.repeat(10 * 1024), () => 'Negotiate YIIB', () => 'Digest username="a"',
    () => 'Bearer gantry.', () => `Bearer gantry.${rng.hex(32)}`, () => 'Bearer a b', () => 'bearer x', () => 'BASIC dTpw', () => `Basic ${'='.repeat(100)}`,
    () => `Bearer ${rng.chars(rng.int(1, 100), 'abc.-_~+/=')}`, () => 'AWS4-HMAC-SHA256 Credential=x', () => ' ', () => `Basic ${'dTpw '.repeat(500)}`,
  ])();
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/', `/v2/${t.repo}/tags/list`, '/token?scope=repository:a/b:pull', `/token?scope=repository:${t.repo}:pull&service=${t.upstreamHost}`]);
  const headers: Header[] = [['Authorization', auth]];
  if (rng.chance(0.1)) headers.push(['Authorization', 'Bearer second']);
  return one(`Authorization ${JSON.stringify(auth.slice(0, 40))} (${auth.length} bytes) ${target.slice(0, 40)}`, { method: GET_OR_HEAD(rng), target, headers });
}

function genRequestIdJunk(rng: Rng, t: FuzzTarget): Draft {
  const id = rng.pick([
    () => 'x'.repeat(10 * 1024), () => 'a'.repeat(64), () => 'a'.repeat(65), () => '', () => ' ', () => '../../etc', () => '%0d%0aX-Injected: 1',
    () => '\xc3\xa9\xe2\x98\x83', () => '<script>alert(1)</script>', () => '"quoted"', () => '{"json":1}', () => 'a b c', () => 'id\ttab',
    () => rng.chars(rng.int(1, 80), 'abcXYZ019._-'), () => rng.chars(rng.int(1, 80), 'abc%/\\:;"\''),
  ])();
  const headers: Header[] = [['X-Request-Id', id]];
  if (rng.chance(0.2)) headers.push(['X-Request-Id', 'second-id']);
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/', '/v2/BAD/manifests/x', '/nowhere']);
  return one(`X-Request-Id ${JSON.stringify(id.slice(0, 40))} (${id.length} bytes)`, { method: GET_OR_HEAD(rng), target, headers });
}

function genHostJunk(rng: Rng, t: FuzzTarget): Draft {
  const host = rng.pick([
    '', ' ', 'evil.example', '127.0.0.1:99999', '127.0.0.1:0', 'a b', '[::1', '[::1]:80', '../../', 'x@y', 'h'.repeat(rng.int(256, 12_000)),
    '\xc3\xa9.example', 'xn--e1afmkfd', 'EXAMPLE.COM', 'example.com.', '127.0.0.1:5000/path', 'host?query', 'host#frag', 'host\\x', '%2e%2e',
    'localhost:abc', ':80', '1.2.3.4:5:6', t.upstreamHost, `${t.upstreamHost}/v2`, '"quoted"', 'a,b', '*',
  ]);
  const headers: Header[] = [['Host', host], ['Connection', 'close']];
  if (rng.chance(0.2)) headers.push(['Host', 'second.example']);
  if (rng.chance(0.2)) headers.push(['X-Forwarded-Proto', rng.pick(['https', 'gopher', 'https"', '\xff'])]);
  if (rng.chance(0.2)) headers.push(['X-Forwarded-Host', rng.pick(['evil.example', 'a'.repeat(5000)])]);
  const target = rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, '/v2/', '/token', `/v2/${t.repo}/blobs/${blobOf(t, rng)}`]);
  return one(`Host ${JSON.stringify(host.slice(0, 40))} ${target.slice(0, 30)}`, { method: GET_OR_HEAD(rng), target, headers, noDefaultHeaders: true });
}

function genPipelined(rng: Rng, t: FuzzTarget): Draft {
  const n = rng.int(2, 6);
  const methods: string[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const last = i === n - 1;
    const method = GET_OR_HEAD(rng);
    methods.push(method);
    const target = rng.pick([
      `/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, '/v2/', '/v2/BAD/manifests/x', `/v2/${t.repo}/blobs/sha256:${rng.hex(64)}`,
      `/v2/${t.repo}/manifests/${t.manifestDigest}`, '/healthz', '/nowhere', `/v2/${t.repo}/tags/list?n=${rng.int(-5, 5)}`,
    ]);
    const headers: Header[] = rng.chance(0.3) ? [['Range', `bytes=${rng.int(0, 100)}-${rng.int(0, 200)}`]] : [];
    parts.push(request({ method, target, keepAlive: !last, headers }));
  }
  const all = Buffer.concat(parts);
  // Split the pipeline at random points so request boundaries fall inside reads.
  const cuts = Array.from({ length: rng.int(0, 3) }, () => rng.int(1, all.length - 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    if (c > at) chunks.push(all.subarray(at, c));
    at = Math.max(at, c);
  }
  chunks.push(all.subarray(at));
  return { label: `${n} pipelined requests (${methods.join(',')})`, chunks, methods };
}

function genTokenEndpoint(rng: Rng, t: FuzzTarget): Draft {
  if (rng.chance(0.5)) {
    const q = rng.pick([
      '', '?scope=', '?scope=repository', `?scope=repository:${t.repo}:pull`, '?scope=repository:UPPER:pull', '?scope=repository::pull', '?scope=repository:a:',
      `?scope=repository:${'a:'.repeat(3000)}pull!`, `?scope=${'repository:a/b:pull%20'.repeat(300)}`, '?service=%00', `?service=${t.upstreamHost}&scope=repository:%2e%2e:pull`,
      '?offline_token=true', '?offline_token=true&account=%00', `?scope=repository:${t.upstreamHost}/${t.repo}:pull,push`, '?scope=registry:catalog:*',
    ]);
    const headers: Header[] = rng.chance(0.5) ? [['Authorization', rng.pick(['Basic !!!', `Basic ${Buffer.from('u:p').toString('base64')}`, 'Bearer x', 'Basic', `Basic ${Buffer.from('nocolon').toString('base64')}`])]] : [];
    return one(`GET /token${q.slice(0, 60)}`, { target: `/token${q}`, headers });
  }
  const form = rng.pick([
    '', 'grant_type=', 'grant_type=password', 'grant_type=password&username=u&password=p', `grant_type=password&username=u&password=p&scope=repository:${t.repo}:pull`,
    'grant_type=refresh_token', 'grant_type=refresh_token&refresh_token=gantry.x', 'grant_type=refresh_token&refresh_token=', 'grant_type=client_credentials',
    `grant_type=password&username=${'u'.repeat(70_000)}`, '%%%%', '&&&&', '=&=&=', 'grant_type=password&username=%ff&password=%fe', '\xff\xfe\x00',
    `grant_type=password&username=u&password=p&scope=repository:${'a'.repeat(300)}:pull`, `grant_type=password&username=u&password=p&scope=repository:UPPER:pull&service=evil.example`,
  ]);
  const body = Buffer.from(form, 'latin1');
  const ct = rng.pick(['application/x-www-form-urlencoded', 'application/json', 'text/plain', 'multipart/form-data; boundary=x', '\xff']);
  return { label: `POST /token ${JSON.stringify(form.slice(0, 50))} (${body.length} bytes)`, chunks: [request({ method: 'POST', target: '/token', headers: [['Content-Type', ct], ['Content-Length', String(body.length)]], body })], methods: ['POST'] };
}

function genTlsHello(rng: Rng): Draft {
  const kind = rng.int(0, 3);
  if (kind === 3) {
    return { label: 'HTTP/2 connection preface', chunks: [bytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]))], halfCloseAfterMs: 300, methods: ['PRI'] };
  }
  if (kind === 2) {
    // SSLv2-compatible ClientHello (what very old clients send).
    return { label: 'SSLv2 ClientHello', chunks: [bytes(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]), rng.bytes(0x25))], halfCloseAfterMs: 300, methods: ['?'] };
  }
  const sni = Buffer.from('gantry.local');
  const random = rng.bytes(32);
  const sessionId = rng.bytes(32);
  const ciphers = Buffer.from([0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2f, 0xc0, 0x30, 0x00, 0xff]);
  const sniExt = bytes(Buffer.from([0x00, 0x00]), u16(sni.length + 5), u16(sni.length + 3), Buffer.from([0x00]), u16(sni.length), sni);
  const versionsExt = Buffer.from([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
  const exts = bytes(sniExt, versionsExt, kind === 1 ? rng.bytes(rng.int(0, 300)) : Buffer.alloc(0));
  const hello = bytes(Buffer.from([0x03, 0x03]), random, Buffer.from([sessionId.length]), sessionId, u16(ciphers.length), ciphers, Buffer.from([0x01, 0x00]), u16(exts.length), exts);
  const handshake = bytes(Buffer.from([0x01]), u24(hello.length), hello);
  const record = bytes(Buffer.from([0x16, 0x03, 0x01]), u16(handshake.length), handshake);
  return { label: `TLS ClientHello (${record.length} bytes${kind === 1 ? ', junk extensions' : ''})`, chunks: [record], halfCloseAfterMs: 300, methods: ['?'] };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

function u24(n: number): Buffer {
  return Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

function genMutatedValid(rng: Rng, t: FuzzTarget): Draft {
  const method = GET_OR_HEAD(rng);
  const base = request({
    method,
    target: rng.pick([`/v2/${t.repo}/manifests/${t.tag}`, `/v2/${t.repo}/blobs/${blobOf(t, rng)}`, `/v2/${t.repo}/manifests/${t.manifestDigest}?ns=${t.upstreamHost}`]),
    headers: [['Accept', 'application/vnd.oci.image.manifest.v1+json'], ['Range', 'bytes=0-9'], ['User-Agent', 'fuzz/1.0']],
  });
  const b = Buffer.from(base);
  const ops: string[] = [];
  const n = rng.int(1, 6);
  let out: Buffer = b;
  for (let i = 0; i < n; i++) {
    const at = rng.int(0, out.length - 1);
    switch (rng.int(0, 4)) {
      case 0: {
        const bit = 1 << rng.int(0, 7);
        out[at] = (out[at] ?? 0) ^ bit;
        ops.push(`flip@${at}`);
        break;
      }
      case 1:
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
        ops.push(`del@${at}`);
        break;
      case 2:
        out = Buffer.concat([out.subarray(0, at), rng.bytes(rng.int(1, 8)), out.subarray(at)]);
        ops.push(`ins@${at}`);
        break;
      case 3:
        out[at] = rng.pick([0x00, 0x0d, 0x0a, 0x20, 0x3a, 0x25, 0x2f, 0x2e, 0x5c, 0x7f, 0xff]);
        ops.push(`set@${at}`);
        break;
      default: {
        const len = rng.int(1, 16);
        const chunk = out.subarray(at, at + len);
        out = Buffer.concat([out.subarray(0, at), chunk, chunk, out.subarray(at + len)]);
        ops.push(`dup@${at}`);
      }
    }
  }
  return { label: `mutated valid ${method} (${ops.join(' ')})`, chunks: [out], halfCloseAfterMs: 300, methods: [method] };
}

function genRandomBytes(rng: Rng): Draft {
  const n = rng.int(1, 4096);
  const kind = rng.int(0, 2);
  const data = kind === 0 ? rng.bytes(n) : kind === 1 ? Buffer.from(rng.chars(n, ' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\r\n'), 'latin1') : bytes('GET ', rng.bytes(n));
  return { label: `${n} random ${kind === 1 ? 'printable ' : ''}bytes${kind === 2 ? ' after "GET "' : ''}`, chunks: [data], halfCloseAfterMs: 300, methods: ['?'] };
}

const GENERATORS: Record<(typeof CATEGORIES)[number], (rng: Rng, t: FuzzTarget) => Draft> = {
  'bad-name': genBadName,
  traversal: genTraversal,
  'bad-digest': genBadDigest,
  'bad-tag': genBadTag,
  'bad-reference': genBadReference,
  'bad-range': genBadRange,
  'odd-method': genOddMethod,
  'huge-headers': genHugeHeaders,
  'huge-url': genHugeUrl,
  'bad-request-line': genBadRequestLine,
  truncated: genTruncated,
  'bad-chunked': genBadChunked,
  'cl-te-conflict': genClTeConflict,
  'body-on-get': genBodyOnGet,
  'invalid-utf8': genInvalidUtf8,
  'ns-query': genNsQuery,
  'accept-junk': genAcceptJunk,
  'auth-junk': genAuthJunk,
  'request-id-junk': genRequestIdJunk,
  'host-junk': genHostJunk,
  pipelined: genPipelined,
  'token-endpoint': genTokenEndpoint,
  'tls-hello': genTlsHello,
  'mutated-valid': genMutatedValid,
  'random-bytes': genRandomBytes,
};

/**
 * Fixed cases that found bugs: kept so the test fails until they are fixed, whatever the seed.
 * They come first, at indices 0..n-1, and are sent like any other case.
 */
export function regressionCases(t: FuzzTarget): Array<Omit<FuzzCase, 'index'>> {
  const blob = t.blobDigests[1] ?? t.manifestDigest; // the layer the test warms into the cache
  // src/http/range.ts matches Range with /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i: the adjacent \s* around
  // the empty-able \d* groups backtrack polynomially (~cubic) on whitespace that is not followed by the end,
  // blocking the event loop (every connection) for seconds: 1,500 spaces on each side is ~2-4 s on a small VM,
  // 7,000 (a 14 KiB header, under the 16 KiB limit) is minutes.
  const pad = ' '.repeat(1500);
  const form = 'grant_type=password&username=u&password=p';
  return [
    {
      category: 'regression',
      label: 'ReDoS: Range "bytes=<1500 spaces>-<1500 spaces>x" on a cached blob',
      chunks: [request({ target: `/v2/${t.repo}/blobs/${blob}`, headers: [['Range', `bytes=${pad}-${pad}x`]] })],
      halfCloseAfterMs: undefined,
      methods: ['GET'],
    },
    {
      // distribution answers 405 to HEAD on tags/list; Gantry relays the HEAD and turns the 405 into 502 UNAVAILABLE.
      category: 'regression',
      label: 'HEAD tags/list: upstream 405 becomes 502',
      chunks: [request({ method: 'HEAD', target: `/v2/${t.repo}/tags/list` })],
      halfCloseAfterMs: undefined,
      methods: ['HEAD'],
    },
    {
      // The client leaves while /token reads the body: c.req.text() rejects ("aborted", ECONNRESET), app.onError logs
      // "unhandled error" at error level with a stack and answers 500 to nobody; the access line says 200, aborted.
      category: 'regression',
      label: 'POST /token, body cut after half of its Content-Length, then FIN',
      chunks: [request({ method: 'POST', target: '/token', headers: [['Content-Type', 'application/x-www-form-urlencoded'], ['Content-Length', String(form.length * 2)]] }), bytes(form)],
      halfCloseAfterMs: 20,
      methods: ['POST'],
    },
  ];
}

/** Case `index` of `seed` (regression cases first, then the categories round-robin). */
export function fuzzCase(seed: string, index: number, target: FuzzTarget): FuzzCase {
  const fixed = regressionCases(target);
  const pinned = fixed[index];
  if (pinned) return { ...pinned, index };
  const i = index - fixed.length;
  const category = CATEGORIES[i % CATEGORIES.length] as (typeof CATEGORIES)[number];
  const rng = new Rng(hashSeed(`${seed}:${i}`)); // by generated index: adding a regression case changes no other case
  const d = GENERATORS[category](rng, target);
  // Sometimes split a single-chunk request at a random point: parser state across reads.
  let chunks = d.chunks;
  const only = chunks[0];
  if (chunks.length === 1 && only && only.length > 2 && rng.chance(0.2)) {
    const at = rng.int(1, only.length - 1);
    chunks = [only.subarray(0, at), only.subarray(at)];
  }
  return { index, category, label: d.label, chunks, halfCloseAfterMs: d.halfCloseAfterMs, methods: d.methods ?? ['GET'] };
}

/** Printable excerpt of a case's bytes for failure reports (JSON-escaped, clipped). */
export function describeBytes(chunks: Buffer[], max = 400): string {
  const all = Buffer.concat(chunks);
  const text = JSON.stringify(all.subarray(0, max).toString('latin1'));
  return all.length > max ? `${text}… (${all.length} bytes)` : text;
}
