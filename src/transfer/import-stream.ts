import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tarSource } from './archive-source.ts';
import { importArchive, type ImportCache, type ImportSummary, type ImportTarget } from './import.ts';

/**
 * Import a tar arriving as a stream (the body of POST /admin/import). The import reads an archive
 * twice (check, then write), so the body is spooled first, under the cache's own tmp/ (which
 * every start-up empties), never outside the cache directory; the spool is removed either way.
 */
export async function importStream(body: ReadableStream<Uint8Array>, cache: ImportCache, cacheDir: string, target: ImportTarget, label: string): Promise<ImportSummary> {
  const dir = join(resolve(cacheDir), 'tmp');
  await mkdir(dir, { recursive: true });
  const spool = join(dir, `import-${randomUUID()}.tar`);
  try {
    await pipeline(Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>), createWriteStream(spool));
    const source = tarSource(spool);
    return await importArchive({ label, forEachFile: (onFile, onLink) => source.forEachFile(onFile, onLink).catch((err: unknown) => Promise.reject(relabel(err, spool, label))) }, cache, target);
  } finally {
    await rm(spool, { force: true });
  }
}

/** Errors name the archive the client sent, not the spool file. */
function relabel(err: unknown, spool: string, label: string): unknown {
  if (err instanceof Error) err.message = err.message.replaceAll(spool, label);
  return err;
}
