import { LRUCache } from 'lru-cache';
import type { FileHandle } from 'node:fs/promises';
import type { Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { FsBlobStore } from './blob-store.ts';
import { LevelIndexStore, type ContentEntry, type TagEntry } from './index-store.ts';

const ACCESS_FLUSH_INTERVAL_MS = 5_000;
const TAG_CACHE_ENTRIES = 10_000;
/** Manifests are small and hot (every pull starts with them): keep their bytes in memory. */
const HOT_MANIFEST_BYTES = 64 * 1024 * 1024;

/**
 * The local side of the cache: verified files (FsBlobStore) + their index
 * (LevelIndexStore) + an in-memory LRU of every entry that both answers
 * lookups without touching LevelDB and enforces the size budget.
 *
 * Evicting unlinks the file: readers that already opened it keep their file
 * descriptor, so a blob being read is never cut short.
 */
export class ContentCache {
  readonly files: FsBlobStore;
  readonly index: LevelIndexStore;
  private readonly lru: LRUCache<string, ContentEntry>;
  private readonly tags: LRUCache<string, TagEntry>;
  private readonly hot: LRUCache<string, Buffer>;
  private readonly dirty = new Set<string>();
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(opts: { files: FsBlobStore; index: LevelIndexStore; maxBytes: number; metrics: Metrics; log: Logger }) {
    this.files = opts.files;
    this.index = opts.index;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.maxBytes = opts.maxBytes > 0 ? opts.maxBytes : Number.MAX_SAFE_INTEGER;
    this.lru = new LRUCache<string, ContentEntry>({
      maxSize: this.maxBytes,
      sizeCalculation: (e) => Math.max(1, e.size),
      dispose: (entry, digest, reason) => {
        if (reason === 'evict') this.evict(digest as Digest, entry);
      },
    });
    this.tags = new LRUCache<string, TagEntry>({ max: TAG_CACHE_ENTRIES });
    this.hot = new LRUCache<string, Buffer>({ maxSize: HOT_MANIFEST_BYTES, sizeCalculation: (b) => Math.max(1, b.length) });
  }

  /** Load the index into memory, oldest access first so LRU order survives restarts. */
  async init(): Promise<void> {
    await this.files.init();
    await this.index.open();
    const all: Array<[Digest, ContentEntry]> = [];
    for await (const pair of this.index.allContent()) all.push(pair);
    all.sort((a, b) => a[1].lastAccess - b[1].lastAccess);
    for (const [digest, entry] of all) this.lru.set(digest, entry);
    this.updateGauges();
    this.flushTimer = setInterval(() => void this.flush(), ACCESS_FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
  }

  async close(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    await this.flush();
    await this.index.close();
  }

  /** Index lookup without touching recency. */
  peek(digest: Digest): ContentEntry | undefined {
    return this.lru.peek(digest);
  }

  /**
   * Open a cached object for serving and record the access. Returns undefined
   * on a miss; an index entry whose file vanished is dropped and is a miss.
   */
  async open(digest: Digest): Promise<{ fh: FileHandle; size: number; entry: ContentEntry } | undefined> {
    const entry = this.lru.get(digest);
    if (!entry) return undefined;
    const file = await this.files.openRead(digest);
    if (!file) {
      this.log.warn({ digest }, 'indexed file missing; dropping index entry');
      await this.forget(digest);
      return undefined;
    }
    entry.lastAccess = Date.now();
    entry.hits += 1;
    this.dirty.add(digest);
    return { ...file, entry };
  }

  /**
   * Read a whole small object (a manifest), from memory when possible, and
   * record the access. A file whose size disagrees with the index is dropped.
   */
  async readWhole(digest: Digest): Promise<{ bytes: Buffer; entry: ContentEntry } | undefined> {
    const entry = this.lru.get(digest);
    if (!entry) return undefined;
    let bytes = this.hot.get(digest);
    if (!bytes) {
      const file = await this.files.openRead(digest);
      if (!file) {
        this.log.warn({ digest }, 'indexed file missing; dropping index entry');
        await this.forget(digest);
        return undefined;
      }
      try {
        bytes = await file.fh.readFile();
      } finally {
        await file.fh.close();
      }
      if (bytes.length !== entry.size) {
        this.log.error({ digest, expected: entry.size, actual: bytes.length }, 'cached file has the wrong size; dropping it');
        await this.forget(digest);
        await this.files.remove(digest);
        return undefined;
      }
      this.hot.set(digest, bytes);
    }
    entry.lastAccess = Date.now();
    entry.hits += 1;
    this.dirty.add(digest);
    return { bytes, entry };
  }

  /** Record a verified object that is already at its content address. */
  async add(digest: Digest, entry: ContentEntry): Promise<void> {
    await this.index.putContent(digest, entry);
    if (entry.size > this.maxBytes) {
      // Larger than the whole budget: it was served to whoever asked, but cannot stay.
      this.evict(digest, entry);
      return;
    }
    this.lru.set(digest, entry);
    this.updateGauges();
  }

  /** An access check with Gantry's own (anonymous/configured) auth passed: the object is public. */
  async markPublic(digest: Digest): Promise<void> {
    const entry = this.lru.peek(digest);
    if (!entry?.restricted) return;
    entry.restricted = false;
    await this.index.putContent(digest, entry);
  }

  async forget(digest: Digest): Promise<void> {
    this.lru.delete(digest);
    this.hot.delete(digest);
    this.dirty.delete(digest);
    await this.index.deleteContent(digest);
    this.updateGauges();
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    const key = LevelIndexStore.tagKey(upstream, repo, tag);
    const hot = this.tags.get(key);
    if (hot) return hot;
    const stored = await this.index.getTag(upstream, repo, tag);
    if (stored) this.tags.set(key, stored);
    return stored;
  }

  async putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void> {
    this.tags.set(LevelIndexStore.tagKey(upstream, repo, tag), entry);
    await this.index.putTag(upstream, repo, tag, entry);
  }

  get totalBytes(): number {
    return this.lru.calculatedSize;
  }

  get entries(): number {
    return this.lru.size;
  }

  /** Persist last-access times and hit counts, batched off the hot path. */
  async flush(): Promise<void> {
    if (this.dirty.size === 0) return;
    const batch: Array<[Digest, ContentEntry]> = [];
    for (const d of this.dirty) {
      const e = this.lru.peek(d);
      if (e) batch.push([d as Digest, e]);
    }
    this.dirty.clear();
    try {
      await this.index.putContentMany(batch);
    } catch (err) {
      this.log.error({ err }, 'failed to persist access times');
    }
  }

  private evict(digest: Digest, entry: ContentEntry): void {
    this.dirty.delete(digest);
    this.hot.delete(digest);
    this.metrics.evictions.inc();
    this.metrics.evictedBytes.inc(entry.size);
    // Index first: a crash between the two leaves an orphan file (harmless), never an entry without a file.
    void this.index
      .deleteContent(digest)
      .then(() => this.files.remove(digest))
      .then(() => this.log.info({ digest, bytes: entry.size }, 'evicted'))
      .catch((err: unknown) => this.log.error({ err, digest }, 'eviction failed'))
      .finally(() => this.updateGauges());
  }

  private updateGauges(): void {
    this.metrics.cacheBytes.set(this.lru.calculatedSize);
    this.metrics.cacheEntries.set(this.lru.size);
  }
}
