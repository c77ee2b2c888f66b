import { createDigester, type Digest } from '../oci/digest.ts';
import { ImportError, type ArchiveSource } from './archive-source.ts';

/** What the first pass learns of one file: its digest, size, whether it is gzip, and small JSON bytes. */
export type ScannedFile = { name: string; digest: Digest; size: number; gzip: boolean; json?: Buffer };
/** Entry name → file. A symlink's name maps to the file it points at (whose `name` is the real entry, read in the second pass). */
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
  const links = new Map<string, string>();
  await source.forEachFile(
    async (name, _size, body) => {
      files.set(name, await scanFile(name, body, onBytes));
    },
    (name, target) => void links.set(name, target),
  );
  for (const [name, target] of links) files.set(name, resolveLink(source.label, name, target, files, links));
  return files;
}

/** Symlinks may chain (a link to a link); a bounded walk ends at a regular file of the archive, or fails naming the link. */
const MAX_LINK_HOPS = 8;

function resolveLink(label: string, name: string, target: string, files: Scan, links: ReadonlyMap<string, string>): ScannedFile {
  let at = target;
  for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
    const file = files.get(at);
    if (file && !links.has(at)) return file;
    const next = links.get(at);
    if (next === undefined) break;
    at = next;
  }
  throw new ImportError(label, name, `symlink to ${JSON.stringify(target)}, which is not a regular file in the archive`);
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
