import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createDigester, digestAlgorithm, type Digest } from '../oci/digest.ts';
import { BlobMismatchError, type BlobStore, type BlobWriter, type ByteRange } from './blob-store-api.ts';
import { FileSource, type ChunkSource } from './chunk-source.ts';
import { OpenFiles } from './open-files.ts';

/** Descriptors kept open for recently served files: well under the default limit of 1,024 per process. */
const OPEN_FILES = 256;

/**
 * Content-addressed files under `<root>/blobs/<alg>/<2 hex>/<hex>`; writes go
 * to `<root>/tmp` and are renamed into place only once verified, so a path
 * under blobs/ always holds complete, verified bytes.
 *
 * Every path is derived from a parsed Digest (alg + fixed-length hex) or a
 * name read from the directory itself, never from client text, so nothing
 * can be written outside the cache directory.
 */
export class FsBlobStore implements BlobStore {
  readonly root: string;
  private readonly tmpDir: string;
  private readonly tempName: () => string;
  private readonly openFiles: OpenFiles;

  /** `tempName` is for tests that need a predictable temp file; `openFiles`: descriptors kept open for hot files. */
  constructor(root: string, opts: { tempName?: () => string; openFiles?: number } = {}) {
    this.root = root;
    this.openFiles = new OpenFiles(opts.openFiles ?? OPEN_FILES);
    this.tmpDir = tempDir(root);
    this.tempName = opts.tempName ?? (() => `${Date.now()}-${randomBytes(8).toString('hex')}`);
  }

  async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(join(this.root, 'blobs'), { recursive: true });
  }

  private pathFor(name: string): string {
    return blobPath(this.root, name);
  }

  pathOf(digest: Digest): string {
    return this.pathFor(digest);
  }

  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      return { size: (await stat(this.pathFor(digest))).size };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async openRead(digest: Digest, range?: ByteRange): Promise<{ source: ChunkSource; size: number } | undefined> {
    const file = await this.openFiles.lend(digest, this.pathFor(digest));
    if (!file) return undefined;
    return { source: new FileSource(file.fd, range?.start ?? 0, range?.end ?? file.size, file.release), size: file.size };
  }

  async createWriter(digest: Digest): Promise<BlobWriter> {
    const tempPath = join(this.tmpDir, this.tempName());
    // w+ : one descriptor for the writes and every read back; it stays valid across the rename.
    const fh = await open(tempPath, 'wx+');
    return new FsBlobWriter(fh, tempPath, digest, (d) => this.moveIntoPlace(tempPath, d));
  }

  private async moveIntoPlace(tempPath: string, digest: Digest): Promise<void> {
    const dest = this.pathFor(digest);
    await mkdir(join(dest, '..'), { recursive: true });
    await rename(tempPath, dest);
  }

  async remove(digest: Digest): Promise<void> {
    this.openFiles.forget(digest);
    await unlink(this.pathFor(digest)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  close(): void {
    this.openFiles.clear();
  }

  async *list(): AsyncGenerator<string> {
    const base = join(this.root, 'blobs');
    for (const alg of await readdir(base).catch(() => [] as string[])) {
      for (const prefix of await readdir(join(base, alg)).catch(() => [] as string[])) {
        for (const hex of await readdir(join(base, alg, prefix)).catch(() => [] as string[])) {
          yield `${alg}:${hex}`;
        }
      }
    }
  }
}

/** A temp file, hashed as it is written; commit = verify, fsync, rename. */
class FsBlobWriter implements BlobWriter {
  readonly digest: Digest;
  written = 0;
  private readonly fh: FileHandle;
  readonly path: string;
  private readonly digester: ReturnType<typeof createDigester>;
  private readonly moveIntoPlace: (digest: Digest) => Promise<void>;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private closed = false;

  constructor(fh: FileHandle, tempPath: string, digest: Digest, moveIntoPlace: (digest: Digest) => Promise<void>) {
    this.fh = fh;
    this.path = tempPath;
    this.digest = digest;
    this.digester = createDigester(digestAlgorithm(digest));
    this.moveIntoPlace = moveIntoPlace;
  }

  async write(chunks: readonly Uint8Array[]): Promise<void> {
    if (this.state !== 'open') throw new Error(`blob writer is ${this.state}`);
    let total = 0;
    for (const c of chunks) {
      this.digester.update(c);
      total += c.length;
    }
    const { bytesWritten } = await this.fh.writev(chunks as Uint8Array[], this.written);
    if (bytesWritten < total) await this.writeAll(Buffer.concat(chunks).subarray(bytesWritten), this.written + bytesWritten);
    this.written += total;
  }

  private async writeAll(buf: Buffer, position: number): Promise<void> {
    for (let off = 0; off < buf.length; ) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off, position + off);
      off += bytesWritten;
    }
  }

  async readAt(buf: Buffer, position: number): Promise<number> {
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, position);
    return bytesRead;
  }

  async commit(size?: number): Promise<void> {
    if (this.state !== 'open') throw new Error(`blob writer is ${this.state}`);
    if (size !== undefined && this.written !== size) throw new BlobMismatchError('size', `${this.written} bytes written, ${size} expected`);
    const actual = this.digester.digest();
    if (actual !== this.digest) throw new BlobMismatchError('digest', `bytes hash to ${actual}`);
    await this.fh.sync();
    await this.moveIntoPlace(this.digest);
    this.state = 'committed';
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await unlink(this.path).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => undefined);
  }
}

/** Where FsBlobStore writes blobs until they are verified: `<root>/tmp`. */
export function tempDir(root: string): string {
  return join(root, 'tmp');
}

/** Where FsBlobStore keeps `<alg>:<hex>` under `root`: `<root>/blobs/<alg>/<2 hex>/<hex>`. */
export function blobPath(root: string, name: string): string {
  const [alg = '', hex = ''] = name.split(':');
  return join(root, 'blobs', alg, hex.slice(0, 2), hex);
}

export function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
