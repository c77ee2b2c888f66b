import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createDigester, digestAlgorithm, digestHex, type Digest } from '../oci/digest.ts';

/**
 * Content-addressed files under `<root>/blobs/<alg>/<2 hex>/<hex>`; fills are
 * written under `<root>/tmp` and renamed into place only once verified, so a
 * path under blobs/ always holds complete, verified bytes.
 *
 * Every path is derived from a parsed Digest (alg + fixed-length hex), never
 * from client text, so nothing can be written outside the cache directory.
 */
export class FsBlobStore {
  readonly root: string;
  readonly tmpDir: string;

  constructor(root: string) {
    this.root = root;
    this.tmpDir = join(root, 'tmp');
  }

  /** Create the layout and remove temp files left by a crash (they were never verified). */
  async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(join(this.root, 'blobs'), { recursive: true });
  }

  pathFor(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.root, 'blobs', digestAlgorithm(digest), hex.slice(0, 2), hex);
  }

  newTempPath(): string {
    return join(this.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
  }

  /** Open a committed blob for reading; undefined if it is not on disk. */
  async openRead(digest: Digest): Promise<{ fh: FileHandle; size: number } | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(this.pathFor(digest), 'r');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    try {
      const st = await fh.stat();
      return { fh, size: st.size };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async size(digest: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.pathFor(digest))).size;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Move a verified, fsynced temp file into its content address. */
  async commit(tempPath: string, digest: Digest): Promise<void> {
    const dest = this.pathFor(digest);
    await mkdir(join(dest, '..'), { recursive: true });
    await rename(tempPath, dest);
  }

  async remove(digest: Digest): Promise<void> {
    await unlink(this.pathFor(digest)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** Write a small, already verified object (a manifest) atomically. */
  async writeVerified(digest: Digest, bytes: Uint8Array): Promise<void> {
    const tmp = this.newTempPath();
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.commit(tmp, digest);
  }

  /** Remove a file found under blobs/ by listDigests (its name may not be a valid digest). */
  async removePath(listed: string): Promise<void> {
    const [alg = '', hex = ''] = listed.split(':');
    await unlink(join(this.root, 'blobs', alg, hex.slice(0, 2), hex)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** Hash a committed file with its digest's algorithm; undefined if it is missing. */
  async hash(digest: Digest): Promise<{ digest: Digest; size: number } | undefined> {
    const digester = createDigester(digestAlgorithm(digest));
    let size = 0;
    try {
      for await (const chunk of createReadStream(this.pathFor(digest), { highWaterMark: 1024 * 1024 })) {
        digester.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    return { digest: digester.digest(), size };
  }

  /** Every committed digest on disk (for reconciliation with the index). */
  async *listDigests(): AsyncGenerator<Digest> {
    const base = join(this.root, 'blobs');
    for (const alg of await readdir(base).catch(() => [] as string[])) {
      for (const prefix of await readdir(join(base, alg)).catch(() => [] as string[])) {
        for (const hex of await readdir(join(base, alg, prefix)).catch(() => [] as string[])) {
          yield `${alg}:${hex}` as Digest;
        }
      }
    }
  }
}

export function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
