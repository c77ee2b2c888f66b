import type { Digest } from '../oci/digest.ts';
import type { BlobWriter } from './blob-store-api.ts';

/** What the tier keeps about an object besides its bytes. */
export type SharedMeta = {
  /** Fetched with a client's own credential: another node serves it only after the same access check. */
  restricted: boolean;
  mediaType: string;
};

/** An object found in the tier: its size, what it is, and its bytes from the offset asked for. */
export type SharedObject = { size: number; meta: SharedMeta; body: AsyncIterable<Uint8Array> };

/**
 * Verified content shared by several Gantry nodes (an S3 bucket: store/s3-tier.ts), between each
 * node's local disk and the upstreams. A local miss looks here before going upstream, and what a
 * node downloads from an upstream is written here too, only verified. The tier is an
 * optimisation: when it cannot be reached, every call says "not there" and the node works alone.
 */
export interface SharedTier {
  /** False while the tier is skipped after an error (until it answers again). */
  readonly up: boolean;
  /**
   * The object's bytes from `offset`; undefined when the tier does not have it, or cannot be asked
   * now (it is down: logged and counted there). Never rejects.
   */
  open(digest: Digest, offset?: number): Promise<SharedObject | undefined>;
  /**
   * Store an object while it is downloaded. Nothing is visible under its digest until complete(),
   * which the caller invokes only after the bytes were verified.
   */
  upload(digest: Digest, size: number | undefined, meta: SharedMeta): SharedUpload;
  /**
   * A blob was asked for on this node, whatever serves it (its disk, a peer, the tier): recency for
   * the tier's budget, so content in use anywhere in the cluster is not what the tier drops first.
   */
  used(digest: Digest): void;
  /** Store a small verified object (a manifest) at once; failures are logged, never thrown. */
  put(digest: Digest, bytes: Uint8Array, meta: SharedMeta): Promise<void>;
  /** Stop: uploads still running are given a moment, then aborted. */
  close(): Promise<void>;
}

/**
 * One upload in progress. Its failures never fail the download it copies: the upload is dropped
 * (logged, counted) and the node keeps the blob locally.
 */
export interface SharedUpload {
  /** Queue chunks, in order; resolves when the upload has room for more. Never rejects. */
  write(chunks: readonly Uint8Array[]): Promise<void>;
  /** The bytes were verified: make the object visible. Resolves when done or given up. Never rejects. */
  complete(): Promise<void>;
  /** The download failed: nothing may become visible. Never rejects. */
  abort(): Promise<void>;
}

/**
 * A local writer whose bytes also go to the shared tier: the local commit verifies them, and only
 * then is the upload completed (in the background: clients wait for the local commit only).
 */
export function teeToShared(local: BlobWriter, upload: SharedUpload, onPublished?: (p: Promise<void>) => void): BlobWriter {
  return {
    digest: local.digest,
    ...(local.path !== undefined ? { path: local.path } : {}),
    get written() {
      return local.written;
    },
    async write(chunks) {
      await Promise.all([local.write(chunks), upload.write(chunks)]);
    },
    readAt: (buf, position) => local.readAt(buf, position),
    async commit(size) {
      await local.commit(size);
      const published = upload.complete();
      onPublished?.(published);
    },
    async abort() {
      await Promise.all([local.abort(), upload.abort()]);
    },
    close: () => local.close(),
  };
}
