import { Level } from 'level';
import type { Digest } from '../oci/digest.ts';

/** What the index knows about one cached object (blob or manifest). */
export type ContentEntry = {
  kind: 'blob' | 'manifest';
  size: number;
  mediaType: string;
  upstream: string;
  /** Repository as the upstream knows it, e.g. library/alpine. */
  repo: string;
  createdAt: number;
  lastAccess: number;
  hits: number;
  /** Fetched with a client's own credential: only served after an upstream access check. */
  restricted?: boolean;
};

/** A tag → digest association with the time it was last confirmed upstream. */
export type TagEntry = { digest: Digest; mediaType: string; size: number; checkedAt: number; restricted?: boolean };

type Sub = ReturnType<Level<string, unknown>['sublevel']>;

/**
 * The LevelDB-backed cache index. Content entries are keyed by digest, tags
 * by upstream + repository + tag, so two upstreams never share a tag.
 */
export class LevelIndexStore {
  readonly db: Level<string, unknown>;
  private readonly content: Sub;
  private readonly tags: Sub;

  constructor(path: string) {
    this.db = new Level<string, unknown>(path, { valueEncoding: 'json' });
    this.content = this.db.sublevel<string, unknown>('c', { valueEncoding: 'json' }) as Sub;
    this.tags = this.db.sublevel<string, unknown>('t', { valueEncoding: 'json' }) as Sub;
  }

  async open(): Promise<void> {
    await this.db.open();
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  async getContent(digest: Digest): Promise<ContentEntry | undefined> {
    return (await this.content.get(digest)) as ContentEntry | undefined;
  }

  async putContent(digest: Digest, entry: ContentEntry): Promise<void> {
    await this.content.put(digest, entry);
  }

  async deleteContent(digest: Digest): Promise<void> {
    await this.content.del(digest);
  }

  /** Persist access bookkeeping for many entries in one batch. */
  async putContentMany(entries: Iterable<[Digest, ContentEntry]>): Promise<void> {
    const ops = [...entries].map(([key, value]) => ({ type: 'put' as const, key, value }));
    if (ops.length > 0) await this.content.batch(ops);
  }

  async *allContent(): AsyncGenerator<[Digest, ContentEntry]> {
    for await (const [k, v] of this.content.iterator()) yield [k as Digest, v as ContentEntry];
  }

  static tagKey(upstream: string, repo: string, tag: string): string {
    // NUL cannot appear in a host, a repository name or a tag.
    return `${upstream}\u0000${repo}\u0000${tag}`;
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    return (await this.tags.get(LevelIndexStore.tagKey(upstream, repo, tag))) as TagEntry | undefined;
  }

  async putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void> {
    await this.tags.put(LevelIndexStore.tagKey(upstream, repo, tag), entry);
  }

  async deleteTag(upstream: string, repo: string, tag: string): Promise<void> {
    await this.tags.del(LevelIndexStore.tagKey(upstream, repo, tag));
  }
}
