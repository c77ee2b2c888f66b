import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';

/** Bad input in an archive: the message names the file and the entry. */
export class ImportError extends Error {
  constructor(file: string, entry: string | undefined, why: string) {
    super(entry === undefined ? `${file}: ${why}` : `${file}: entry ${JSON.stringify(entry)}: ${why}`);
    this.name = 'ImportError';
  }
}

/** Called once per regular file, in archive order; must consume `body` before resolving. */
export type OnFile = (name: string, size: number, body: AsyncIterable<Buffer>) => Promise<void>;
/** Called once per symlink entry with its target as an entry name (resolved, never outside the archive). */
export type OnLink = (name: string, target: string) => void;

/**
 * An image archive read by paths: a tar file or a directory. Read it as often as needed. Symlink
 * entries go to `onLink` when given (the first pass, which records them as aliases) and are
 * skipped otherwise.
 */
export type ArchiveSource = { label: string; forEachFile(onFile: OnFile, onLink?: OnLink): Promise<void> };

/**
 * A relative path with no `..`, no absolute start and no empty or NUL parts, normalised
 * (`./blobs/x` → `blobs/x`); anything else is refused, so nothing resolves outside the archive.
 */
export function safeEntryName(file: string, raw: string): string {
  if (raw.includes('\0') || raw.startsWith('/') || /^[a-zA-Z]:/.test(raw) || raw.includes('\\')) throw new ImportError(file, raw, 'absolute or unsafe path');
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new ImportError(file, raw, 'path leaves the archive (..)');
  return posix.join(...(parts.length > 0 ? parts : ['.']));
}

/**
 * Where a symlink entry points, as an entry name: relative to the link's own directory, and
 * refused when absolute or when it climbs out of the archive. dockerd 20.10's `docker save`
 * writes `<id>/layer.tar -> ../<other id>/layer.tar` when one layer sits on two parent chains.
 */
export function symlinkTarget(file: string, name: string, linkname: string): string {
  if (linkname === '' || linkname.includes('\0') || linkname.startsWith('/') || /^[a-zA-Z]:/.test(linkname) || linkname.includes('\\')) {
    throw new ImportError(file, name, `symlink to ${JSON.stringify(linkname)}: absolute or unsafe target`);
  }
  const target = posix.normalize(posix.join(posix.dirname(name), linkname));
  if (target === '..' || target.startsWith('../')) throw new ImportError(file, name, `symlink to ${JSON.stringify(linkname)} leaves the archive`);
  return safeEntryName(file, target);
}

/**
 * A tar file, streamed with tar-stream. A symlink is only an alias for another entry of the
 * archive (never followed on disk); hard links and special files are refused.
 */
export function tarSource(file: string): ArchiveSource {
  return {
    label: file,
    async forEachFile(onFile, onLink) {
      const ex = extract();
      const reading = pipeline(createReadStream(file), ex);
      try {
        for await (const entry of ex) {
          const { name: raw, type, size } = entry.header;
          const name = safeEntryName(file, raw);
          if (type === 'directory') {
            entry.resume();
            continue;
          }
          if (type === 'symlink') {
            const target = symlinkTarget(file, name, entry.header.linkname ?? '');
            entry.resume();
            onLink?.(name, target);
            continue;
          }
          if (type !== 'file' && type !== 'contiguous-file') throw new ImportError(file, raw, `${type ?? 'unknown'} entries are not accepted (only regular files and directories)`);
          // tar-stream entries yield Buffers; its types say unknown.
          await onFile(name, size ?? 0, entry as AsyncIterable<Buffer>);
        }
        await reading;
      } catch (err) {
        ex.destroy();
        await reading.catch(() => undefined);
        throw asImportError(file, err);
      }
    },
  };
}

/** An OCI image layout directory, read by paths; symlinks are refused like tar links. */
export function directorySource(dir: string): ArchiveSource {
  const walk = async (rel: string, onFile: OnFile): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const entry = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(join(dir, entry));
      if (st.isDirectory()) await walk(entry, onFile);
      else if (st.isFile()) await onFile(entry, st.size, createReadStream(join(dir, entry)));
      else throw new ImportError(dir, entry, 'symlinks and special files are not accepted');
    }
  };
  return { label: dir, forEachFile: (onFile) => walk('', onFile).catch((err: unknown) => Promise.reject(asImportError(dir, err))) };
}

/** Pick the reader: a directory by paths, anything else as a tar. A missing file is one line naming it. */
export async function openArchive(path: string): Promise<ArchiveSource> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    throw new ImportError(path, undefined, 'no such file or directory');
  }
  return st.isDirectory() ? directorySource(path) : tarSource(path);
}

function asImportError(file: string, err: unknown): ImportError {
  if (err instanceof ImportError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new ImportError(file, undefined, /unexpected end|premature|truncat/i.test(msg) ? `truncated tar (${msg})` : `not a readable tar archive (${msg})`);
}
