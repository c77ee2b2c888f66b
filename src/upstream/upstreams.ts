import { DOCKER_HUB_HOST, type Config } from '../config/config.ts';
import { RegistryError } from '../oci/errors.ts';
import type { RepositoryName } from '../oci/reference.ts';
import type { UpstreamClient } from './client.ts';

export type ResolvedTarget = {
  upstream: UpstreamClient;
  /** The repository name as the upstream knows it (e.g. `library/alpine`). */
  remoteName: string;
};

/**
 * Pick the upstream for a request. Only configured upstreams can be chosen:
 * an unknown `ns` is a 404, never a request to a new host (no open proxy).
 */
export class Upstreams {
  private readonly byHost: Map<string, UpstreamClient>;
  private readonly defaultHost: string;

  constructor(clients: UpstreamClient[], config: Pick<Config, 'defaultUpstream'>) {
    this.byHost = new Map(clients.map((c) => [c.host, c]));
    this.defaultHost = config.defaultUpstream;
  }

  all(): UpstreamClient[] {
    return [...this.byHost.values()];
  }

  resolve(name: RepositoryName, ns: string | undefined): ResolvedTarget {
    const host = ns?.toLowerCase() ?? this.defaultHost;
    const upstream = this.byHost.get(host) ?? (host === 'registry-1.docker.io' ? this.byHost.get(DOCKER_HUB_HOST) : undefined);
    if (!upstream) {
      throw new RegistryError('NAME_UNKNOWN', { message: 'no upstream is configured for this registry', detail: { ns: host.slice(0, 255) } });
    }
    return { upstream, remoteName: remoteNameFor(upstream.host, name) };
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((u) => u.close()));
  }
}

/** Docker Hub's official images live under `library/`; clients may omit it. */
export function remoteNameFor(host: string, name: string): string {
  return host === DOCKER_HUB_HOST && !name.includes('/') ? `library/${name}` : name;
}
