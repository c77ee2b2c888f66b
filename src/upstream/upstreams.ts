import { DOCKER_HUB_HOST, type Config } from '../config/config.ts';
import { RegistryError } from '../oci/errors.ts';
import type { ImageRef } from '../oci/image-ref.ts';
import { parseRepositoryName, type RepositoryName } from '../oci/reference.ts';
import type { UpstreamClient } from './client.ts';
import { compileRepoPatterns } from './repo-patterns.ts';

export type ResolvedTarget = {
  upstream: UpstreamClient;
  /** The repository name after any path prefix is removed. */
  name: RepositoryName;
  /** The repository name exactly as the client wrote it (what its token scopes name). */
  clientName: string;
  /** The repository name as the upstream knows it (e.g. `library/alpine`). */
  remoteName: string;
  /** Whether the client's name differs from the upstream's (prefix routing, library/): upstream challenges don't fit the client then. */
  renamed: boolean;
};

export type RouteHints = { ns?: string | undefined; hostHeader?: string | undefined };

type Entry = { client: UpstreamClient; allowed: (repo: string) => boolean };

/**
 * Pick the upstream for a request, in this order:
 *  1. containerd's `?ns=<registry host>`;
 *  2. a path prefix `/v2/<registry host or prefix alias>/<repository>/...` (podman path mirrors, containerd override_path);
 *  3. the Host header, for upstreams configured with virtual hosts;
 *  4. the default upstream (dockerd's registry-mirrors).
 * Only configured upstreams can be chosen: an unknown `ns` is a 404, never a request to a new host.
 */
export class Upstreams {
  private readonly byHost = new Map<string, Entry>();
  private readonly byPrefix = new Map<string, Entry>();
  private readonly byVirtualHost = new Map<string, Entry>();
  private readonly defaultEntry: Entry;

  constructor(clients: UpstreamClient[], config: Pick<Config, 'defaultUpstream'>) {
    for (const client of clients) {
      const c = client.config;
      const entry: Entry = { client, allowed: compileRepoPatterns(c.allow, c.deny) };
      this.byHost.set(c.host, entry);
      this.byPrefix.set(c.host, entry);
      if (c.prefix) this.byPrefix.set(c.prefix, entry);
      for (const v of c.virtualHosts ?? []) this.byVirtualHost.set(v, entry);
    }
    const def = this.byHost.get(config.defaultUpstream);
    if (!def) throw new Error(`default upstream ${config.defaultUpstream} is not configured`);
    this.defaultEntry = def;
  }

  all(): UpstreamClient[] {
    return [...this.byHost.values()].map((e) => e.client);
  }

  defaultUpstream(): UpstreamClient {
    return this.defaultEntry.client;
  }

  byName(host: string): UpstreamClient | undefined {
    return this.byHost.get(host)?.client;
  }

  /**
   * The target an image reference names (`ghcr.io/org/app`, `nginx`): its registry when that is a
   * configured upstream, the default upstream for a Docker Hub name; anything else is NAME_UNKNOWN.
   */
  forImage(ref: ImageRef): ResolvedTarget {
    if (this.byHost.has(ref.registry)) return this.resolve(ref.repository, { ns: ref.registry });
    if (ref.registry === DOCKER_HUB_HOST) return this.resolve(ref.repository);
    throw new RegistryError('NAME_UNKNOWN', { message: `no upstream is configured for ${ref.registry}`, detail: { registry: ref.registry } });
  }

  /** `rawName` is the still-unvalidated name from the URL path. */
  resolve(rawName: string, hints: RouteHints = {}): ResolvedTarget {
    const slash = rawName.indexOf('/');
    const first = slash > 0 ? rawName.slice(0, slash).toLowerCase() : undefined;
    const prefixed = first !== undefined ? this.byPrefix.get(first) : undefined;
    let entry: Entry | undefined;
    let name = rawName;
    if (hints.ns !== undefined) {
      const ns = hints.ns.toLowerCase();
      entry = this.byHost.get(ns) ?? (ns === 'registry-1.docker.io' ? this.byHost.get(DOCKER_HUB_HOST) : undefined);
      if (!entry) {
        throw new RegistryError('NAME_UNKNOWN', { message: 'no upstream is configured for this registry', detail: { ns: ns.slice(0, 255) } });
      }
      // containerd override_path sends both: /v2/<prefix>/<repo>?ns=<same registry>
      if (prefixed === entry) name = rawName.slice(slash + 1);
    } else if (prefixed) {
      entry = prefixed;
      name = rawName.slice(slash + 1);
    } else {
      entry = this.virtualHost(hints.hostHeader) ?? this.defaultEntry;
    }
    const valid = parseRepositoryName(name);
    const remoteName = remoteNameFor(entry.client.host, valid);
    if (!entry.allowed(remoteName)) {
      throw new RegistryError('DENIED', { message: 'repository not allowed by this mirror', detail: { name: valid } });
    }
    return { upstream: entry.client, name: valid, clientName: rawName, remoteName, renamed: remoteName !== rawName };
  }

  /**
   * The name a client puts in a path to reach repository `remoteName` of upstream `host`: the
   * default upstream's repositories as they are (`library/alpine`), another upstream's behind its
   * prefix, or its host when it has none (`ghcr.io/org/app`). Each candidate is resolved back, so
   * a name is only offered if it leads to that repository; undefined when none does (the upstream
   * left the config, its rules now deny the repository).
   */
  clientNameOf(host: string, remoteName: string): string | undefined {
    const entry = this.byHost.get(host);
    if (!entry) return undefined;
    const prefixed = `${entry.client.config.prefix ?? host}/${remoteName}`;
    // A default-upstream repository whose first component is another upstream's prefix needs the prefixed form too.
    const candidates = entry === this.defaultEntry ? [remoteName, prefixed] : [prefixed];
    return candidates.find((name) => this.leadsTo(name, entry.client, remoteName));
  }

  private leadsTo(name: string, client: UpstreamClient, remoteName: string): boolean {
    try {
      const target = this.resolve(name);
      return target.upstream === client && target.remoteName === remoteName;
    } catch {
      return false;
    }
  }

  private virtualHost(header: string | undefined): Entry | undefined {
    if (!header) return undefined;
    const h = header.toLowerCase();
    return this.byVirtualHost.get(h) ?? this.byVirtualHost.get(h.replace(/:\d+$/, ''));
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((u) => u.close()));
  }
}

/** Docker Hub's official images live under `library/`; clients may omit it. */
export function remoteNameFor(host: string, name: string): string {
  return host === DOCKER_HUB_HOST && !name.includes('/') ? `library/${name}` : name;
}
