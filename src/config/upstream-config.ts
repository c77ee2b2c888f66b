import { bool, int, size, stringList, text, url } from './kinds.ts';
import { secret } from './secrets.ts';
import { isRecord, parseFields, type Overrides, type ParseContext, type Setting, type ValuesOf } from './setting.ts';

/** A tag (distribution spec grammar) in which `*` may stand for any characters. */
export const TAG_PATTERN_SYNTAX = /^[A-Za-z0-9_*][A-Za-z0-9._*-]{0,127}$/;

/**
 * One entry of `upstreams:`. Its keys are declared once, here; `env` / `flag` on an entry's key
 * override that key of the *default* upstream only (GANTRY_UPSTREAM_URL and friends).
 */
export const UPSTREAM_FIELDS = {
  host: text({
    required: true,
    help: 'the registry name clients use, e.g. `docker.io`, `ghcr.io`, `registry.internal:5000`',
    pattern: /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?$/i,
    lowercase: true,
    expected: 'a registry host such as docker.io or registry.internal:5000',
    typeName: 'registry host',
  }),
  url: url({ required: true, help: 'where Gantry actually sends requests', env: 'GANTRY_UPSTREAM_URL', flag: 'upstream-url' }),
  prefix: text({
    help: '`/v2/<prefix>/<repo>/...` selects this upstream (hosts with a port cannot be a path component)',
    pattern: /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/,
    expected: 'one lowercase path component such as "internal"',
    typeName: 'path component',
  }),
  virtualHosts: stringList({ help: '`Host` header values that select this upstream', lowercase: true }),
  username: text({ help: 'credential for the upstream, with a password', allowEmpty: true, env: 'GANTRY_UPSTREAM_USERNAME' }),
  password: secret('password', { help: 'the password for `username`', env: 'GANTRY_UPSTREAM_PASSWORD' }),
  token: secret('token', { help: 'a static bearer token sent as is, instead of username/password' }),
  tagTtlSeconds: int({ min: 0, help: 'overrides the global `tagTtlSeconds` for this upstream', docDefault: '`tagTtlSeconds`' }),
  immutableTags: stringList({ pattern: TAG_PATTERN_SYNTAX, expected: 'a tag pattern (tag characters and `*`)', help: "more tag patterns that never change, on top of the global `immutableTags`", docDefault: 'none' }),
  allow: stringList({ help: 'repository patterns allowed (`*` within a path component, `**` across); deny wins', docDefault: 'all' }),
  deny: stringList({ help: 'repository patterns denied', docDefault: 'none' }),
  serveCachedOn404: bool({ help: 'keep serving cached content when the upstream answers 404 (e.g. a deleted tag)', docDefault: '`false`' }),
  maxBytesPerSecond: size({ help: 'blob bytes per second from this upstream, on top of the global `upstreamMaxBytesPerSecond`', docDefault: 'no limit' }),
  realmHosts: stringList({ help: "extra hosts allowed as bearer-token realms besides the upstream's own registrable domain", lowercase: true }),
} as const;

export type UpstreamConfig = ValuesOf<typeof UPSTREAM_FIELDS>;

/** The override key of an entry key with an env var or flag: `url` → `upstreamUrl`. */
export function upstreamOverrideKey(name: string): string {
  return `upstream${name[0]?.toUpperCase() ?? ''}${name.slice(1)}`;
}

/** The entry keys that env vars or flags override on the default upstream, with their override keys. */
export function upstreamOverrides(): Array<[overrideKey: string, name: keyof typeof UPSTREAM_FIELDS, setting: Setting<unknown>]> {
  return (Object.entries(UPSTREAM_FIELDS) as Array<[keyof typeof UPSTREAM_FIELDS, Setting<unknown>]>)
    .filter(([, s]) => s.env !== undefined || s.flag !== undefined)
    .map(([name, s]) => [upstreamOverrideKey(name), name, s]);
}

/** The `upstreams:` list: each entry against UPSTREAM_FIELDS, then the rules across entries. */
export function parseUpstreamList(raw: unknown, key: string, ctx: ParseContext): UpstreamConfig[] | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    ctx.problems.push(`${key}: expected a non-empty list`);
    return undefined;
  }
  const upstreams = raw.map((u, i) => parseUpstream(u, `${key}[${i}]`, ctx)).filter((u): u is UpstreamConfig => u !== undefined);
  // Hosts, prefixes and virtual hosts all select an upstream: each may name only one.
  const seen = new Map<string, string>();
  for (const u of upstreams) {
    for (const name of [u.host, ...(u.prefix ? [u.prefix] : []), ...(u.virtualHosts ?? []).map((v) => `vhost:${v}`)]) {
      const other = seen.get(name);
      if (other !== undefined) ctx.problems.push(`${key}: ${name.replace('vhost:', '')} selects both ${other} and ${u.host}`);
      seen.set(name, u.host);
    }
  }
  return upstreams;
}

function parseUpstream(raw: unknown, where: string, ctx: ParseContext): UpstreamConfig | undefined {
  if (!isRecord(raw)) {
    ctx.problems.push(`${where}: expected a mapping`);
    return undefined;
  }
  const up = parseFields(UPSTREAM_FIELDS, raw, `${where}.`, {}, ctx);
  // A failed required key still yields an entry, so the rules across entries see the others.
  up.host ??= String(raw['host']).toLowerCase();
  up.url ??= '';
  if (up.token !== undefined && up.username !== undefined) ctx.problems.push(`${where}: use either a token or username/password`);
  return up;
}

/**
 * Apply GANTRY_UPSTREAM_* / --upstream-* to the default upstream (mutates it), then check what
 * must hold for every upstream.
 */
export function applyUpstreamOverrides(upstreams: UpstreamConfig[], def: UpstreamConfig | undefined, overrides: Overrides, ctx: ParseContext): void {
  if (def) {
    for (const [overrideKey, name, s] of upstreamOverrides()) {
      const v = overrides[overrideKey];
      if (v === undefined) continue;
      const label = `upstream ${name} (${[s.env, s.flag && `--${s.flag}`].filter(Boolean).join(' / ')})`;
      const parsed = s.parse(v, label, { ...ctx, record: {} });
      if (parsed !== undefined) (def as Record<string, unknown>)[name] = parsed;
    }
  }
  for (const u of upstreams) {
    if ((u.username === undefined) !== (u.password === undefined)) {
      ctx.problems.push(`upstream ${u.host}: username and password must be set together`);
    }
  }
}
