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

/** A tag record with what its key says: which upstream and repository it belongs to. */
export type TagRecord = { upstream: string; repo: string; tag: string; entry: TagEntry };

/**
 * An image kept out of eviction: its reference (a tag or a digest under an upstream and
 * repository) and every digest it needs (manifests, configs, layers), cached yet or not.
 */
export type PinRecord = { upstream: string; repo: string; reference: string; digests: Digest[]; pinnedAt: number };

type Sub = ReturnType<Level<string, unknown>['sublevel']>;

/**
 * Key spaces for state that lives beside the cache index and must survive restarts, owned by
 * modules other than the cache (prefetch jobs, when pins were released, referrers answers). Values are JSON; their
 * owner validates them.
 */
export type RecordSpace = 'prefetch-jobs' | 'unpinned' | 'referrers';

/** One record space of the index: JSON values by string key. */
export type RecordStore = {
  put(key: string, value: unknown): Promise<void>;
  delete(key: string): Promise<void>;
  all(): AsyncIterable<[string, unknown]>;
};

const RECORD_SUBLEVELS: Record<RecordSpace, string> = { 'prefetch-jobs': 'j', unpinned: 'u', referrers: 'r' };

/** What the cache index keeps: content entries by digest, tags by upstream + repository + tag. */
export interface IndexStore {
  open(): Promise<void>;
  close(): Promise<void>;
  putContent(digest: Digest, entry: ContentEntry): Promise<void>;
  deleteContent(digest: Digest): Promise<void>;
  /** Persist access bookkeeping for many entries in one batch. */
  putContentMany(entries: Iterable<[Digest, ContentEntry]>): Promise<void>;
  allContent(): AsyncIterable<[Digest, ContentEntry]>;
  getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined>;
  putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void>;
  /** Every tag record, ordered by upstream, repository, tag. */
  allTags(): AsyncIterable<TagRecord>;
  /** The tag records of one repository, ordered by tag. */
  repoTags(upstream: string, repo: string): AsyncIterable<TagRecord>;
  putPin(pin: PinRecord): Promise<void>;
  deletePin(upstream: string, repo: string, reference: string): Promise<void>;
  allPins(): AsyncIterable<PinRecord>;
  records(space: RecordSpace): RecordStore;
}

/** One key per (upstream, repository, tag). NUL cannot appear in a host, a repository name or a tag. */
export function tagKey(upstream: string, repo: string, tag: string): string {
  return `${upstream}\u0000${repo}\u0000${tag}`;
}

/** Split tag keys back into their parts; a key without all three (never written by tagKey) is skipped. */
async function* tagRecords(entries: AsyncIterable<[unknown, unknown]>): AsyncGenerator<TagRecord> {
  for await (const [key, value] of entries) {
    const [upstream, repo, tag] = String(key).split('\u0000');
    if (upstream !== undefined && repo !== undefined && tag !== undefined) yield { upstream, repo, tag, entry: value as TagEntry };
  }
}

/**
 * The LevelDB-backed cache index. Content entries are keyed by digest, tags
 * by upstream + repository + tag, so two upstreams never share a tag.
 */
export class LevelIndexStore implements IndexStore {
  private readonly db: Level<string, unknown>;
  private readonly content: Sub;
  private readonly tags: Sub;
  private readonly pins: Sub;

  constructor(path: string) {
    this.db = new Level<string, unknown>(path, { valueEncoding: 'json' });
    this.content = this.db.sublevel<string, unknown>('c', { valueEncoding: 'json' }) as Sub;
    this.tags = this.db.sublevel<string, unknown>('t', { valueEncoding: 'json' }) as Sub;
    this.pins = this.db.sublevel<string, unknown>('p', { valueEncoding: 'json' }) as Sub;
  }

  async open(): Promise<void> {
    await this.db.open();
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  async putContent(digest: Digest, entry: ContentEntry): Promise<void> {
    await this.content.put(digest, entry);
  }

  async deleteContent(digest: Digest): Promise<void> {
    await this.content.del(digest);
  }

  async putContentMany(entries: Iterable<[Digest, ContentEntry]>): Promise<void> {
    const ops = [...entries].map(([key, value]) => ({ type: 'put' as const, key, value }));
    if (ops.length > 0) await this.content.batch(ops);
  }

  async *allContent(): AsyncGenerator<[Digest, ContentEntry]> {
    for await (const [k, v] of this.content.iterator()) yield [k as Digest, v as ContentEntry];
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    return (await this.tags.get(tagKey(upstream, repo, tag))) as TagEntry | undefined;
  }

  async putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void> {
    await this.tags.put(tagKey(upstream, repo, tag), entry);
  }

  async *allTags(): AsyncGenerator<TagRecord> {
    yield* tagRecords(this.tags.iterator());
  }

  async *repoTags(upstream: string, repo: string): AsyncGenerator<TagRecord> {
    // The repository's keys all start with this prefix (NUL ends the repository name, so `a/b` is
    // not taken for `a`), and tags are ASCII: U+FFFF sorts after every one of them.
    const prefix = tagKey(upstream, repo, '');
    yield* tagRecords(this.tags.iterator({ gte: prefix, lt: `${prefix}\uffff` }));
  }

  async putPin(pin: PinRecord): Promise<void> {
    await this.pins.put(tagKey(pin.upstream, pin.repo, pin.reference), pin);
  }

  async deletePin(upstream: string, repo: string, reference: string): Promise<void> {
    await this.pins.del(tagKey(upstream, repo, reference));
  }

  async *allPins(): AsyncGenerator<PinRecord> {
    for await (const v of this.pins.values()) yield v as PinRecord;
  }

  records(space: RecordSpace): RecordStore {
    const sub = this.db.sublevel<string, unknown>(RECORD_SUBLEVELS[space], { valueEncoding: 'json' }) as Sub;
    return {
      put: async (key, value) => {
        await sub.put(key, value);
      },
      delete: async (key) => {
        await sub.del(key);
      },
      all: () => sub.iterator() as AsyncIterable<[string, unknown]>,
    };
  }
}
