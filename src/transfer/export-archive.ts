import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack, type Pack } from 'tar-stream';
import type { Digest } from '../oci/digest.ts';
import { blobPath, ExportError, type ExportPlan } from './export-plan.ts';

/** A stored blob as a stream of exactly `size` bytes; undefined when it is not cached. */
export type BlobOpener = (digest: Digest) => Promise<{ body: Readable; size: number } | undefined>;

const OCI_LAYOUT = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));
/** Fixed times keep two exports of the same images byte-identical. */
const MTIME = new Date(0);

/**
 * Write the planned archive as a tar to `out`: the small files, then every blob, streamed from the
 * store (never a whole layer in memory). `onBytes` counts blob bytes as they are written.
 */
export async function writeArchive(plan: ExportPlan, open: BlobOpener, out: Writable, onBytes: (n: number) => void = () => {}): Promise<void> {
  const tar = pack();
  const fill = async (): Promise<void> => {
    try {
      await addFile(tar, 'oci-layout', OCI_LAYOUT);
      await addFile(tar, 'index.json', plan.index);
      await addFile(tar, 'manifest.json', plan.manifestJson);
      for (const dir of directoriesOf(plan)) {
        await addEntry(tar, { name: dir, type: 'directory', mode: 0o755, mtime: MTIME });
      }
      for (const blob of plan.blobs) {
        if (blob.bytes) {
          await addFile(tar, blobPath(blob.digest), blob.bytes);
          onBytes(blob.bytes.length);
        } else {
          await addStream(tar, blobPath(blob.digest), blob.size, await mustOpen(open, blob.digest, blob.size), onBytes);
        }
      }
      tar.finalize();
    } catch (err) {
      tar.destroy(err as Error);
      throw err;
    }
  };
  // Together: an output that fails (disk full, client gone) rejects at once instead of leaving
  // an entry callback waiting forever.
  await Promise.all([fill(), pipeline(tar, out)]);
}

/** The tar's directory entries: `blobs/` and one per digest algorithm. */
function directoriesOf(plan: ExportPlan): string[] {
  return ['blobs/', ...new Set(plan.blobs.map((b) => `${blobPath(b.digest).split('/').slice(0, 2).join('/')}/`))];
}

const TAR_BLOCK = 512;
/** tar-stream's finalize: two zero blocks. */
const TAR_END = 2 * TAR_BLOCK;

/**
 * The size of the archive writeArchive writes for `plan`: a 512-byte header per entry, each file's
 * data padded to 512 bytes, and the end. (Names stay under tar's 100 bytes, so no extended
 * headers.) What a progress bar over the whole file, or a Content-Length, needs.
 */
export function archiveBytes(plan: ExportPlan): number {
  const files = [OCI_LAYOUT.length, plan.index.length, plan.manifestJson.length, ...plan.blobs.map((b) => b.size)];
  const data = files.reduce((n, size) => n + TAR_BLOCK + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK, 0);
  return data + directoriesOf(plan).length * TAR_BLOCK + TAR_END;
}

async function mustOpen(open: BlobOpener, digest: Digest, size: number): Promise<Readable> {
  const opened = await open(digest);
  if (!opened) throw new ExportError(`blob ${digest} is not cached`);
  if (opened.size !== size) {
    opened.body.destroy();
    throw new ExportError(`blob ${digest} is ${opened.size} bytes in the cache, ${size} in its manifest`);
  }
  return opened.body;
}

function addFile(tar: Pack, name: string, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    tar.entry({ name, size: bytes.length, mode: 0o644, mtime: MTIME }, bytes, (err) => (err ? reject(err) : resolve()));
  });
}

function addEntry(tar: Pack, header: Parameters<Pack['entry']>[0]): Promise<void> {
  return new Promise((resolve, reject) => {
    tar.entry(header, (err) => (err ? reject(err) : resolve()));
  });
}

async function addStream(tar: Pack, name: string, size: number, body: Readable, onBytes: (n: number) => void): Promise<void> {
  const entry = tar.entry({ name, size, mode: 0o644, mtime: MTIME });
  body.on('data', (chunk: Buffer) => onBytes(chunk.length));
  await pipeline(body, entry);
}
