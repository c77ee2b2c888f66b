import { adminHeaders } from './export-remote.ts';
import { createReadStream } from 'node:fs';
import { lstat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pack } from 'tar-stream';
import { request } from 'undici';
import { ociErrorMessage } from '../oci/errors.ts';
import { directorySource, ImportError } from './archive-source.ts';
import type { ImportProgress, ImportSummary, ImportTarget } from './import.ts';

/**
 * Send one archive to a running Gantry's `POST /admin/import`, streamed: a tar file as it is, a
 * layout directory packed into a tar on the fly. Its error answer becomes an ImportError.
 */
export async function importThroughServer(path: string, target: ImportTarget, baseUrl: string, progress: ImportProgress, adminToken?: string): Promise<ImportSummary> {
  const body = await bodyOf(path);
  let sent = 0;
  body.on('data', (c: Buffer) => progress({ pass: 1, bytes: (sent += c.length) }));
  // No upstream parameter when --upstream was not given: the server then places each image by its name's registry, as a local import does.
  const q = new URLSearchParams({
    ...(target.byRegistry === undefined ? { upstream: target.upstream } : {}),
    name: path,
    ...(target.repository !== undefined ? { repository: target.repository } : {}),
    ...(target.pin === true ? { pin: 'true' } : {}),
  });
  let res;
  try {
    res = await request(`${baseUrl}/admin/import?${q.toString()}`, { method: 'POST', body, headers: { 'content-type': 'application/x-tar', ...adminHeaders(adminToken) } });
  } catch (err) {
    throw new ImportError(path, undefined, `cannot reach the running Gantry at ${baseUrl} (${(err as Error).message})`);
  }
  const text = await res.body.text();
  if (res.statusCode === 200) return JSON.parse(text) as ImportSummary;
  throw new ImportError(path, undefined, `${baseUrl} answered ${res.statusCode}: ${ociErrorMessage(text) ?? text.slice(0, 300)}`.replaceAll(`${path}: `, ''));
}

async function bodyOf(path: string): Promise<Readable> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) throw new ImportError(path, undefined, 'no such file or directory');
  return st.isDirectory() ? packDirectory(path) : createReadStream(path);
}

/** A layout directory as a tar stream, read by paths (symlinks refused as in a local import). */
function packDirectory(dir: string): Readable {
  const p = pack();
  const fill = async (): Promise<void> => {
    await directorySource(dir).forEachFile(async (name, size, body) => {
      await new Promise<void>((resolve, reject) => {
        const entry = p.entry({ name, size }, (err) => (err ? reject(err) : resolve()));
        void (async () => {
          for await (const chunk of body) if (!entry.write(chunk)) await new Promise<void>((r) => entry.once('drain', () => r()));
          entry.end(Buffer.alloc(0));
        })().catch(reject);
      });
    });
    p.finalize();
  };
  fill().catch((err: unknown) => p.destroy(err as Error));
  return p as unknown as Readable;
}
