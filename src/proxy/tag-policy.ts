import type { UpstreamConfig } from '../config/upstream-config.ts';

/** How long a cached tag is trusted before a revalidating HEAD; Infinity for a tag that never changes. */
export type TagTtl = (upstreamHost: string, tag: string) => number;

/**
 * Each upstream's tag TTL (`tagTtlSeconds`, its own or the global one), except for tags matching
 * `immutableTags` (global, plus the upstream's own): those are trusted for ever once cached, so a
 * signed release pulls with no upstream request after the first.
 */
export function tagTtlPolicy(config: { tagTtlSeconds: number; immutableTags: readonly string[]; upstreams: readonly UpstreamConfig[] }): TagTtl {
  const byHost = new Map(config.upstreams.map((u) => [u.host, { ttlMs: (u.tagTtlSeconds ?? config.tagTtlSeconds) * 1000, immutable: tagMatcher([...config.immutableTags, ...(u.immutableTags ?? [])]) }]));
  const fallback = { ttlMs: config.tagTtlSeconds * 1000, immutable: tagMatcher(config.immutableTags) };
  return (host, tag) => {
    const p = byHost.get(host) ?? fallback;
    return p.immutable(tag) ? Infinity : p.ttlMs;
  };
}

/** `*` stands for any characters (a tag has no `/`); everything else is literal. */
export function tagMatcher(patterns: readonly string[]): (tag: string) => boolean {
  if (patterns.length === 0) return () => false;
  const re = new RegExp(`^(?:${patterns.map((p) => p.split('*').map(escape).join('.*')).join('|')})$`);
  return (tag) => re.test(tag);
}

function escape(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
