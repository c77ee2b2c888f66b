// Reads an archive `gantry export` wrote, for the export tests: every entry's bytes by name.
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';

export type ArchiveIndexEntry = { mediaType: string; digest: string; size: number; annotations?: Record<string, string> };
export type LegacyEntry = { Config: string; RepoTags: string[]; Layers: string[] };
export type ReadArchive = {
  files: Map<string, Buffer>;
  index: { schemaVersion: number; manifests: ArchiveIndexEntry[] };
  legacy: LegacyEntry[];
  /** Names under blobs/ whose sha256 is not their name (empty for a good archive). */
  badBlobs: string[];
};

export async function readArchive(file: string): Promise<ReadArchive> {
  const files = new Map<string, Buffer>();
  const ex = extract();
  ex.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      if (header.type === 'file') files.set(header.name, Buffer.concat(chunks));
      next();
    });
  });
  await pipeline(createReadStream(file), ex);
  const json = <T>(name: string): T => {
    const bytes = files.get(name);
    if (!bytes) throw new Error(`archive has no ${name}`);
    return JSON.parse(bytes.toString('utf8')) as T;
  };
  const badBlobs = [...files].filter(([name, bytes]) => name.startsWith('blobs/') && `blobs/sha256/${createHash('sha256').update(bytes).digest('hex')}` !== name).map(([n]) => n);
  return { files, index: json('index.json'), legacy: json('manifest.json'), badBlobs };
}

export function blobOf(archive: ReadArchive, digest: string): Buffer | undefined {
  return archive.files.get(`blobs/sha256/${digest.replace(/^sha256:/, '')}`);
}
