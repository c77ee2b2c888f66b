import { LRUCache } from 'lru-cache';
import { createDigester, digestAlgorithm, type Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobStore, BlobWriter, ByteRange } from './blob-store-api.ts';
import { readFully, type ChunkSource } from './chunk-source.ts';
import { tagKey, type ContentEntry, type IndexStore, type PinRecord, type RecordSpace, type RecordStore, type TagEntry, type TagRecord } from './index-store.ts';

const ACCESS_FLUSH_INTERVAL_MS = 5_000;
const TAG_CACHE_ENTRIES = 10_000;
const SWEEP_INTERVAL_MS = 60_000;

export type ReconcileReport = { entries: number; missingFiles: number; wrongSize: number; orphanFiles: number };
export type VerifyReport = { checked: number; bytes: number; bad: Array<{ digest: string; reason: string }>; removed: number };
/** Manifests and small blobs are hot (every pull starts with them): keep their bytes in memory. */
const HOT_BYTES = 64 * 1024 * 1024;
const VERIFY_READ_BYTES = 1024 * 1024;

/** What is known about an object before its bytes arrive; size and times are set when it is committed. */
export type IngestMeta = Omit<ContentEntry, 'size' | 'createdAt' | 'lastAccess' | 'hits'>;

/** A pin as listed: its record, and how much of what it names is in the cache now. */
export type PinStatus = PinRecord & { cachedDigests: number; bytes: number };

/** A pin released, remembered (for a while) so nodes sharing pins can tell a release from a pin they never heard of. */
export type UnpinRecord = { upstream: string; repo: string; reference: string; unpinnedAt: number };

/** Releases older than this are forgotten: every node has heard of them long before. */
const UNPIN_MEMORY_MS = 30 * 24 * 3600 * 1000;

/**
 * The local side of the cache: verified blobs (a BlobStore) + their index
 * (an IndexStore) + an in-memory LRU of every entry that both answers
 * lookups without touching LevelDB and enforces the size budget.
 *
 * Evicting unlinks the file: readers that already opened it keep their file
 * descriptor, so a blob being read is never cut short.
 *
 * Content enters only through ingest(): a writer whose commit verifies size
 * and digest, then moves the bytes into place and indexes them, together.
 */
export class ContentCache {
  private readonly files: BlobStore;
  private readonly index: IndexStore;
  private readonly lru: LRUCache<string, ContentEntry>;
  private readonly tags: LRUCache<string, TagEntry>;
  private readonly hot: LRUCache<string, Buffer>;
  private readonly dirty = new Set<string>();
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private readonly lowWatermarkBytes: number;
  private readonly maxUnusedAgeMs: number;
  private flushTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Digest → how many pins name it; pinned entries are never evicted. */
  private readonly pinned = new Map<string, number>();
  private readonly pinRecords = new Map<string, PinRecord>();
  /** Told of every entry that leaves the index (evicted, removed, found missing). */
  private readonly forgetListeners: Array<(digest: Digest) => void> = [];
  /** Told after each pin or release (cluster/shared-pins.ts shares them). */
  private readonly pinListeners: Array<() => void> = [];
  /** Bytes of cached entries that some pin names (kept as a running sum: gauges update on every add). */
  private pinnedBytes = 0;
  private pinnedOverBudget = false;

  constructor(opts: {
    files: BlobStore;
    index: IndexStore;
    maxBytes: number;
    lowWatermarkPercent?: number;
    maxUnusedAgeSeconds?: number;
    metrics: Metrics;
    log: Logger;
  }) {
    this.files = opts.files;
    this.index = opts.index;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.maxBytes = opts.maxBytes > 0 ? opts.maxBytes : Number.MAX_SAFE_INTEGER;
    this.lowWatermarkBytes = Math.floor((this.maxBytes * (opts.lowWatermarkPercent ?? 100)) / 100);
    this.maxUnusedAgeMs = (opts.maxUnusedAgeSeconds ?? 0) * 1000;
    // The LRU only orders and sizes entries; eviction is ours (high/low watermarks, see enforceBudget).
    this.lru = new LRUCache<string, ContentEntry>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: (e) => Math.max(1, e.size) });
    this.tags = new LRUCache<string, TagEntry>({ max: TAG_CACHE_ENTRIES });
    this.hot = new LRUCache<string, Buffer>({ maxSize: HOT_BYTES, sizeCalculation: (b) => Math.max(1, b.length) });
  }

  /**
   * Load the index into memory (oldest access first, so LRU order survives
   * restarts) after reconciling it with the disk: temp files are gone (never
   * verified), index entries without their file (or with the wrong size) are
   * dropped, and files the index doesn't know are removed.
   */
  async init(): Promise<ReconcileReport> {
    await this.files.init();
    await this.index.open();
    const report = await this.reconcile();
    if (report.missingFiles + report.wrongSize + report.orphanFiles > 0) this.log.warn(report, 'cache reconciled with the disk');
    for await (const pin of this.index.allPins()) this.addPin(pin);
    this.enforceBudget();
    this.sweepUnused();
    this.updateGauges();
    this.flushTimer = setInterval(() => void this.flush(), ACCESS_FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
    if (this.maxUnusedAgeMs > 0) {
      this.sweepTimer = setInterval(() => this.sweepUnused(), Math.min(this.maxUnusedAgeMs, SWEEP_INTERVAL_MS));
      this.sweepTimer.unref();
    }
    return report;
  }

  private async reconcile(): Promise<ReconcileReport> {
    const onDisk = new Set<string>();
    for await (const d of this.files.list()) onDisk.add(d);
    const all: Array<[Digest, ContentEntry]> = [];
    const report: ReconcileReport = { entries: 0, missingFiles: 0, wrongSize: 0, orphanFiles: 0 };
    for await (const [digest, entry] of this.index.allContent()) {
      const present = onDisk.delete(digest);
      const size = present ? (await this.files.stat(digest))?.size : undefined;
      if (size === entry.size) {
        all.push([digest, entry]);
        continue;
      }
      if (present) {
        report.wrongSize += 1;
        await this.files.remove(digest);
      } else report.missingFiles += 1;
      await this.index.deleteContent(digest);
    }
    for (const d of onDisk) {
      report.orphanFiles += 1;
      await this.files.remove(d as Digest);
    }
    all.sort((a, b) => a[1].lastAccess - b[1].lastAccess);
    for (const [digest, entry] of all) this.lru.set(digest, entry);
    report.entries = all.length;
    return report;
  }

  /**
   * Re-hash every cached object against its digest. Bad ones are reported, and
   * with `remove` dropped from the index and the disk.
   */
  async verifyAll(opts: { remove: boolean }): Promise<VerifyReport> {
    const report: VerifyReport = { checked: 0, bytes: 0, bad: [], removed: 0 };
    for (const digest of [...this.lru.keys()] as Digest[]) {
      const entry = this.lru.peek(digest);
      if (!entry) continue; // evicted meanwhile
      const result = await this.hash(digest);
      report.checked += 1;
      report.bytes += result?.size ?? 0;
      const reason = !result ? 'missing' : result.digest !== digest ? 'digest_mismatch' : result.size !== entry.size ? 'size_mismatch' : undefined;
      if (!reason) continue;
      report.bad.push({ digest, reason });
      if (opts.remove) {
        await this.forget(digest);
        await this.files.remove(digest);
        report.removed += 1;
      }
    }
    return report;
  }

  /** Hash a stored object with its digest's algorithm; undefined if it is missing. */
  private async hash(digest: Digest): Promise<{ digest: Digest; size: number } | undefined> {
    const opened = await this.files.openRead(digest);
    if (!opened) return undefined;
    const digester = createDigester(digestAlgorithm(digest));
    const buf = Buffer.allocUnsafe(VERIFY_READ_BYTES);
    let read = 0;
    try {
      for (let chunk = await opened.source.read(buf); chunk !== null; chunk = await opened.source.read(buf)) {
        digester.update(chunk);
        read += chunk.length;
      }
    } catch {
      // A file that cannot be read to its end (truncated under an open descriptor, an I/O error)
      // is as bad as a wrong one: report what was read, which cannot match.
      return { digest: digester.digest(), size: read };
    } finally {
      opened.source.close();
    }
    return { digest: digester.digest(), size: opened.size };
  }

  async close(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.flush();
    await this.index.close();
    this.files.close?.();
  }

  /** Index lookup without touching recency. */
  peek(digest: Digest): ContentEntry | undefined {
    return this.lru.peek(digest);
  }

  /** The local file of a cached object, when the store keeps one (see BlobStore.pathOf). */
  fileOf(digest: Digest): string | undefined {
    return this.lru.has(digest) ? this.files.pathOf?.(digest) : undefined;
  }

  /** Where an object's local file is or will be once committed, when the store keeps one. */
  pathFor(digest: Digest): string | undefined {
    return this.files.pathOf?.(digest);
  }

  /** Reads served elsewhere (by a serving process, from fileOf): recency and hit counts, persisted by flush(). */
  recordReads(digest: Digest, count: number): void {
    const entry = this.lru.get(digest);
    if (entry) this.touch(digest, entry, count);
  }

  /** Call `listener` with the digest of every entry that leaves the cache. */
  onForget(listener: (digest: Digest) => void): void {
    this.forgetListeners.push(listener);
  }

  /** The index entry of an object whose bytes are stored (HEAD), without recording an access. */
  async stat(digest: Digest): Promise<ContentEntry | undefined> {
    const entry = this.lru.peek(digest);
    return entry && (await this.files.stat(digest)) ? entry : undefined;
  }

  /**
   * Open bytes `range` (default: all) of a cached object for serving and
   * record the access. Undefined on a miss; an index entry whose file
   * vanished is dropped and is a miss.
   */
  async open(digest: Digest, range?: ByteRange): Promise<{ source: ChunkSource; size: number; entry: ContentEntry } | undefined> {
    const entry = this.lru.get(digest);
    if (!entry) return undefined;
    const opened = await this.files.openRead(digest, range);
    if (!opened) {
      await this.dropMissing(digest);
      return undefined;
    }
    this.touch(digest, entry);
    return { ...opened, entry };
  }

  /** Bytes [start, end) of a committed object, opened on first read (readers that outlive a fill). */
  openRange(digest: Digest, range: ByteRange): Promise<ChunkSource | undefined> {
    return this.files.openRead(digest, range).then((o) => o?.source);
  }

  /**
   * Read a whole small object (a manifest or small blob), from memory when possible, and
   * record the access. A file whose size disagrees with the index is dropped.
   */
  async readWhole(digest: Digest): Promise<{ bytes: Buffer; entry: ContentEntry } | undefined> {
    const entry = this.lru.get(digest);
    if (!entry) return undefined;
    let bytes = this.hot.get(digest);
    if (!bytes) {
      const opened = await this.files.openRead(digest);
      if (!opened) {
        await this.dropMissing(digest);
        return undefined;
      }
      if (opened.size !== entry.size) {
        opened.source.close();
        this.log.error({ digest, expected: entry.size, actual: opened.size }, 'cached file has the wrong size; dropping it');
        await this.forget(digest);
        await this.files.remove(digest);
        return undefined;
      }
      bytes = await readFully(opened.source, opened.size);
      this.hot.set(digest, bytes);
    }
    this.touch(digest, entry);
    return { bytes, entry };
  }

  private async dropMissing(digest: Digest): Promise<void> {
    this.log.warn({ digest }, 'indexed file missing; dropping index entry');
    await this.forget(digest);
  }

  /** Access bookkeeping, persisted in batches by flush(). */
  private touch(digest: Digest, entry: ContentEntry, count = 1): void {
    entry.lastAccess = Date.now();
    entry.hits += count;
    this.dirty.add(digest);
  }

  /**
   * Start putting an object into the cache: the one way content enters it.
   * The writer's commit verifies size and digest, moves the bytes under the
   * digest and indexes them; until then nothing is visible.
   */
  async ingest(digest: Digest, meta: IngestMeta): Promise<BlobWriter> {
    const writer = await this.files.createWriter(digest);
    const commit = async (size?: number): Promise<void> => {
      await writer.commit(size);
      const now = Date.now();
      await this.add(digest, { ...meta, size: writer.written, createdAt: now, lastAccess: now, hits: 0 });
    };
    return {
      digest,
      ...(writer.path !== undefined ? { path: writer.path } : {}),
      get written() {
        return writer.written;
      },
      write: (chunks) => writer.write(chunks),
      readAt: (buf, position) => writer.readAt(buf, position),
      commit,
      abort: () => writer.abort(),
      close: () => writer.close(),
    };
  }

  /** Ingest a small object already in memory (a manifest); a no-op if it is cached. */
  async ingestBytes(digest: Digest, bytes: Uint8Array, meta: IngestMeta): Promise<void> {
    if (this.lru.peek(digest)) return;
    const writer = await this.ingest(digest, meta);
    try {
      await writer.write([bytes]);
      await writer.commit(bytes.length);
    } catch (err) {
      await writer.abort();
      throw err;
    } finally {
      await writer.close();
    }
  }

  /** Record a verified object that is already at its content address. */
  private async add(digest: Digest, entry: ContentEntry): Promise<void> {
    await this.index.putContent(digest, entry);
    if (this.pinned.has(digest)) this.pinnedBytes += entry.size - (this.lru.peek(digest)?.size ?? 0);
    this.lru.set(digest, entry);
    this.enforceBudget();
    this.updateGauges();
  }

  /**
   * Above the budget (high watermark), evict least-recently-used entries until
   * the cache is down to the low watermark, so eviction runs in batches rather
   * than on every insert. An entry larger than the whole budget goes at once.
   */
  private enforceBudget(): void {
    this.checkPinnedBudget();
    if (this.lru.calculatedSize <= this.maxBytes) return;
    const victims: Array<[Digest, ContentEntry]> = [];
    let size = this.lru.calculatedSize;
    for (const digest of this.lru.rkeys()) {
      if (size <= this.lowWatermarkBytes) break;
      if (this.pinned.has(digest)) continue;
      const entry = this.lru.peek(digest);
      if (!entry) continue;
      victims.push([digest as Digest, entry]);
      size -= Math.max(1, entry.size);
    }
    for (const [digest, entry] of victims) {
      this.lru.delete(digest);
      this.evict(digest, entry);
    }
  }

  /** Evict entries nobody has read for maxUnusedAgeSeconds. */
  private sweepUnused(): void {
    if (this.maxUnusedAgeMs <= 0) return;
    const cutoff = Date.now() - this.maxUnusedAgeMs;
    const victims: Array<[Digest, ContentEntry]> = [];
    for (const digest of this.lru.rkeys()) {
      const entry = this.lru.peek(digest);
      if (entry && entry.lastAccess < cutoff && !this.pinned.has(digest)) victims.push([digest as Digest, entry]);
    }
    for (const [digest, entry] of victims) {
      this.lru.delete(digest);
      this.evict(digest, entry);
    }
    if (victims.length > 0) this.updateGauges();
  }

  /** An access check with Gantry's own (anonymous/configured) auth passed: the object is public. */
  async markPublic(digest: Digest): Promise<void> {
    const entry = this.lru.peek(digest);
    if (!entry?.restricted) return;
    entry.restricted = false;
    await this.index.putContent(digest, entry);
  }

  async forget(digest: Digest): Promise<void> {
    if (this.pinned.has(digest)) this.pinnedBytes -= this.lru.peek(digest)?.size ?? 0;
    this.lru.delete(digest);
    this.hot.delete(digest);
    this.dirty.delete(digest);
    // Before the index write and the unlink that follow, so no one is sent to the file after it goes.
    for (const listener of this.forgetListeners) listener(digest);
    await this.index.deleteContent(digest);
    this.updateGauges();
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    const key = tagKey(upstream, repo, tag);
    const hot = this.tags.get(key);
    if (hot) return hot;
    const stored = await this.index.getTag(upstream, repo, tag);
    if (stored) this.tags.set(key, stored);
    return stored;
  }

  async putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void> {
    this.tags.set(tagKey(upstream, repo, tag), entry);
    await this.index.putTag(upstream, repo, tag, entry);
  }

  /** Every cached object's entry, without recording an access: what listings read. */
  contentEntries(): IterableIterator<ContentEntry> {
    return this.lru.values();
  }

  /**
   * Every tag record, from the index: the in-memory tag LRU holds only the hot ones. A record
   * outlives its manifest (eviction drops content, not tags); peek() tells which still have it.
   */
  allTags(): AsyncIterable<TagRecord> {
    return this.index.allTags();
  }

  /** The tag records of one repository, ordered by tag. */
  repoTags(upstream: string, repo: string): AsyncIterable<TagRecord> {
    return this.index.repoTags(upstream, repo);
  }

  /**
   * Keep an image out of eviction, by the watermarks and by the maximum age, until unpinned. The
   * record names every digest the image needs; those not cached yet are kept once they arrive.
   * Pinning a reference again replaces its earlier pin.
   */
  async pin(pin: PinRecord): Promise<void> {
    await this.index.putPin(pin);
    this.dropPin(tagKey(pin.upstream, pin.repo, pin.reference));
    this.addPin(pin);
    this.checkPinnedBudget();
    this.updateGauges();
    this.pinsChanged();
  }

  /**
   * Release a pin; its content is evictable again. False if there was no such pin. The release
   * is remembered with its time (`at`, now unless another node's release is being applied), so a
   * pin and a release of the same reference order by time wherever they were made.
   */
  async unpin(upstream: string, repo: string, reference: string, at = Date.now()): Promise<boolean> {
    const key = tagKey(upstream, repo, reference);
    if (!this.pinRecords.has(key)) return false;
    await this.index.records('unpinned').put(key, { upstream, repo, reference, unpinnedAt: at } satisfies UnpinRecord);
    await this.index.deletePin(upstream, repo, reference);
    this.dropPin(key);
    this.enforceBudget();
    this.updateGauges();
    this.pinsChanged();
    return true;
  }

  /** Pins released within the last 30 days; older memories are deleted as they are read. */
  async unpinned(now = Date.now()): Promise<UnpinRecord[]> {
    const store = this.index.records('unpinned');
    const out: UnpinRecord[] = [];
    for await (const [key, value] of store.all()) {
      if (!isUnpinRecord(value) || value.unpinnedAt < now - UNPIN_MEMORY_MS) await store.delete(key);
      else out.push(value);
    }
    return out;
  }

  onPinChange(listener: () => void): void {
    this.pinListeners.push(listener);
  }

  private pinsChanged(): void {
    for (const l of this.pinListeners) l();
  }

  pins(): PinStatus[] {
    return [...this.pinRecords.values()].map((p) => {
      const present = p.digests.map((d) => this.lru.peek(d)).filter((e): e is ContentEntry => e !== undefined);
      return { ...p, cachedDigests: present.length, bytes: present.reduce((n, e) => n + e.size, 0) };
    });
  }

  /** State other modules keep beside the index (prefetch jobs), in the same database and lock. */
  records(space: RecordSpace): RecordStore {
    return this.index.records(space);
  }

  isPinned(digest: Digest): boolean {
    return this.pinned.has(digest);
  }

  private addPin(pin: PinRecord): void {
    this.pinRecords.set(tagKey(pin.upstream, pin.repo, pin.reference), pin);
    for (const d of new Set(pin.digests)) {
      const n = this.pinned.get(d) ?? 0;
      if (n === 0) this.pinnedBytes += this.lru.peek(d)?.size ?? 0;
      this.pinned.set(d, n + 1);
    }
  }

  private dropPin(key: string): void {
    const pin = this.pinRecords.get(key);
    if (!pin) return;
    this.pinRecords.delete(key);
    for (const d of new Set(pin.digests)) {
      const n = (this.pinned.get(d) ?? 1) - 1;
      if (n > 0) {
        this.pinned.set(d, n);
        continue;
      }
      this.pinned.delete(d);
      this.pinnedBytes -= this.lru.peek(d)?.size ?? 0;
    }
  }

  /** Pinned content alone over the budget: say so once (it is kept, and serving goes on), and again only after it recovered. */
  private checkPinnedBudget(): void {
    const over = this.pinnedBytes > this.maxBytes;
    if (over && !this.pinnedOverBudget) {
      this.log.warn({ pinnedBytes: this.pinnedBytes, maxCacheBytes: this.maxBytes }, 'pinned content alone exceeds the cache budget; it is kept, and only unpinned content is evicted');
    }
    this.pinnedOverBudget = over;
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
    for (const listener of this.forgetListeners) listener(digest);
    // Index first: a crash between the two leaves an orphan file (harmless), never an entry without a file.
    // A fill may re-add the same digest meanwhile: then its new file stays (and if that race is
    // lost anyway, a missing file is only ever a miss, never wrong bytes).
    void this.index
      .deleteContent(digest)
      .then(() => (this.lru.has(digest) ? undefined : this.files.remove(digest)))
      .then(() => this.log.info({ digest, bytes: entry.size }, 'evicted'))
      .catch((err: unknown) => this.log.error({ err, digest }, 'eviction failed'))
      .finally(() => this.updateGauges());
  }

  private updateGauges(): void {
    this.metrics.cacheBytes.set(this.lru.calculatedSize);
    this.metrics.cacheEntries.set(this.lru.size);
    this.metrics.pinnedBytes.set(this.pinnedBytes);
    this.metrics.pinnedImages.set(this.pinRecords.size);
  }
}

function isUnpinRecord(v: unknown): v is UnpinRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r['upstream'] === 'string' && typeof r['repo'] === 'string' && typeof r['reference'] === 'string' && typeof r['unpinnedAt'] === 'number';
}
