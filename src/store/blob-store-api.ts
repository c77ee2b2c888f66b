import type { Digest } from '../oci/digest.ts';
import type { ChunkSource } from './chunk-source.ts';

/** A byte range of a blob, end exclusive. */
export type ByteRange = { start: number; end: number };

/**
 * Where verified blobs and manifests live, by digest. The pull-through logic
 * sees only this interface, so another backend (S3, a tier of several) plugs
 * in without touching proxy/. Every implementation runs the contract suite in
 * test/contract/blob-store.contract.ts (FsBlobStore: blob-store.ts).
 *
 * A name under a store always holds complete, verified bytes: content gets
 * there only through a BlobWriter's commit, which checks size and digest.
 */
export interface BlobStore {
  /** Prepare the store; drops what unfinished writes left behind (never verified). */
  init(): Promise<void>;
  /** The size of a committed blob; undefined if it is not stored. */
  stat(digest: Digest): Promise<{ size: number } | undefined>;
  /**
   * Open a committed blob now (so a missing one is known before any byte is
   * promised): bytes `range` (default: all of it) as a source, and the whole
   * blob's size. Undefined if it is not stored.
   */
  openRead(digest: Digest, range?: ByteRange): Promise<{ source: ChunkSource; size: number } | undefined>;
  /** A writer for one blob. Writers of the same digest may run at once; each commits whole or not at all. */
  createWriter(digest: Digest): Promise<BlobWriter>;
  /** Remove a blob (or a name `list` returned); no error if it is not there. */
  remove(digest: Digest): Promise<void>;
  /** Every stored name, as `<alg>:<hex>` (not necessarily a valid digest: for reconciliation). */
  list(): AsyncIterable<string>;
  /** Let go of what the store keeps open (descriptors of hot files); readers still going finish. */
  close?(): void;
  /**
   * The local file a committed blob is kept in, for another process to read it itself (serving
   * processes, src/serving/); only stores backed by local files have one.
   */
  pathOf?(digest: Digest): string;
}

/**
 * One blob being written. Bytes are appended, hashed as they go, and can be
 * read back while the write goes on, so readers can tail a download. Nothing
 * is visible under the digest until commit() has verified it.
 */
export interface BlobWriter {
  readonly digest: Digest;
  /**
   * The local file being written, for another process to tail (serving processes, src/serving/);
   * only stores backed by local files have one. Renamed to pathOf(digest) on commit, removed on abort.
   */
  readonly path?: string;
  /** Bytes stored so far (all readable with readAt). */
  readonly written: number;
  /** Append chunks, in order; resolves once they are stored. */
  write(chunks: readonly Uint8Array[]): Promise<void>;
  /** Read back stored bytes at `position` into `buf`; the count read. */
  readAt(buf: Buffer, position: number): Promise<number>;
  /**
   * Verify what was written (its size, when `size` is given, then its digest),
   * make it durable and move it under its digest. Rejects with
   * BlobMismatchError on a mismatch; the writer must then be aborted.
   */
  commit(size?: number): Promise<void>;
  /** Discard an uncommitted write. Idempotent. */
  abort(): Promise<void>;
  /** Release what the writer holds once no reader needs readAt any more. Idempotent. */
  close(): Promise<void>;
}

export class BlobMismatchError extends Error {
  readonly kind: 'size' | 'digest';
  constructor(kind: 'size' | 'digest', message: string) {
    super(message);
    this.name = 'BlobMismatchError';
    this.kind = kind;
  }
}
