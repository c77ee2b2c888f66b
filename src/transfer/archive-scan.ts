import { createDigester, type Digest } from '../oci/digest.ts';
import type { ArchiveSource } from './archive-source.ts';

/** What the first pass learns of one file: its digest, size, whether it is gzip, and small JSON bytes. */
export type ScannedFile = { name: string; digest: Digest; size: number; gzip: boolean; json?: Buffer };
export type Scan = Map<string, ScannedFile>;

/** Manifests, indexes, configs and docker-save's manifest.json are small; layers never start with `{` or `[`. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;

/**
 * First pass over an archive: hash every file and keep the small JSON ones. Entries come in any
 * order, so nothing can be written before the whole archive is known to be sound (a truncated
 * tar or a blob that isn't what its name says stops here, before the cache is touched).
 */
export async function scanArchive(source: ArchiveSource, onBytes: (n: number) => void = () => undefined): Promise<Scan> {
  const files: Scan = new Map();
  await source.forEachFile(async (name, _size, body) => {
    files.set(name, await scanFile(name, body, onBytes));
  });
  return files;
}

async function scanFile(name: string, body: AsyncIterable<Buffer>, onBytes: (n: number) => void): Promise<ScannedFile> {
  const digester = createDigester();
  const head: Buffer[] = [];
  let size = 0;
  let jsonCandidate = true;
  let magic: Buffer | undefined;
  for await (const chunk of body) {
    digester.update(chunk);
    if (magic === undefined && chunk.length > 0) {
      magic = chunk.subarray(0, 2);
      jsonCandidate = chunk[0] === 0x7b || chunk[0] === 0x5b; // { or [
    }
    size += chunk.length;
    onBytes(chunk.length);
    if (jsonCandidate && size <= MAX_JSON_BYTES) head.push(chunk);
    else jsonCandidate = false;
  }
  const json = jsonCandidate && size > 0 ? Buffer.concat(head) : undefined;
  const gzip = magic !== undefined && magic[0] === 0x1f && magic[1] === 0x8b;
  return { name, digest: digester.digest(), size, gzip, ...(json ? { json } : {}) };
}
