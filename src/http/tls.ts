import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server as HttpServer, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../observability/logger.ts';

/** Where the certificate chain and its key are (`tls.certFile`, `tls.keyFile`). */
export type TlsFiles = { certFile: string; keyFile: string };
export type TlsMaterial = { cert: Buffer; key: Buffer };

/** How often the files are looked at: cert-manager and certbot replace them every few weeks, not seconds. */
const WATCH_INTERVAL_MS = 1_000;
/** Both files of a renewal land within this of each other; reading earlier could pair a new key with the old chain. */
const SETTLE_MS = 300;

/** A certificate or key that cannot be used: the message names the setting, the file and why. */
export class TlsFileError extends Error {}

/** Both files, or undefined for plain HTTP (config validation refuses one without the other). */
export function tlsFilesOf(tls: { certFile?: string | undefined; keyFile?: string | undefined }): TlsFiles | undefined {
  return tls.certFile !== undefined && tls.keyFile !== undefined ? { certFile: tls.certFile, keyFile: tls.keyFile } : undefined;
}

/** Read a certificate chain and its key, checked as a pair. */
export async function loadTls(files: TlsFiles): Promise<TlsMaterial> {
  const [cert, key] = await Promise.all([readSetting('tls.certFile', files.certFile), readSetting('tls.keyFile', files.keyFile)]);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsFileError(`tls.certFile ${files.certFile} / tls.keyFile ${files.keyFile}: not a PEM certificate and its private key (${(err as Error).message})`);
  }
  return { cert, key };
}

async function readSetting(setting: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new TlsFileError(`${setting} ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

export type Listening = { server: HttpServer | HttpsServer; stop(): void };

/**
 * Gantry's public server: HTTPS when `tls` is given, whose certificate is reloaded when its
 * files change (connections made after that get the new one; those open keep theirs), else plain
 * HTTP. A renewal that leaves the files unusable (a key that does not match) is logged and the
 * certificate in use is kept.
 */
export function createPublicServer(
  options: ServerOptions,
  listener: (req: IncomingMessage, res: ServerResponse) => void,
  tls: { files: TlsFiles; material: TlsMaterial; log: Logger } | undefined,
): Listening {
  if (!tls) return { server: createHttpServer(options, listener as RequestListener), stop: () => undefined };
  const server = createHttpsServer({ ...options, cert: tls.material.cert, key: tls.material.key }, listener as RequestListener);
  const stop = watchTls(tls.files, (m) => server.setSecureContext({ cert: m.cert, key: m.key }), tls.log);
  return { server, stop };
}

/** Call `apply` with the files' new contents whenever either changes; returns the way to stop watching. */
export function watchTls(files: TlsFiles, apply: (m: TlsMaterial) => void, log: Logger, intervalMs = WATCH_INTERVAL_MS): () => void {
  let timer: NodeJS.Timeout | undefined;
  const reload = async (): Promise<void> => {
    try {
      apply(await loadTls(files));
      log.info({ certFile: files.certFile }, 'TLS certificate reloaded');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'TLS certificate not reloaded; the one in use is kept');
    }
  };
  const changed = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), SETTLE_MS);
    timer.unref();
  };
  for (const f of [files.certFile, files.keyFile]) watchFile(f, { interval: intervalMs, persistent: false }, changed);
  return () => {
    clearTimeout(timer);
    for (const f of [files.certFile, files.keyFile]) unwatchFile(f, changed);
  };
}
