import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { request } from 'undici';
import { ociErrorMessage } from '../oci/errors.ts';
import { parseImageRef } from '../oci/image-ref.ts';
import { formatPlatform, parseManifest, platformMatches, type Platform } from '../oci/manifest.ts';
import { MANIFEST_ACCEPT } from '../oci/media-types.ts';
import { EXPORT_BYTES_HEADER, ExportError } from './export-plan.ts';

/** Bounds every call to the running Gantry: a pull of a large layer may take long, a silent server not. */
const HEADERS_TIMEOUT_MS = 60_000;
const BODY_TIMEOUT_MS = 120_000;

/**
 * Pull `refs` through the running Gantry at `url` with the ordinary pull API, so they are cached
 * the way any client's pull caches them: the manifest, the wanted platforms' manifests, every blob.
 * `?ns=` names the registry, so every configured upstream is reachable, not only the default.
 */
export async function fetchThrough(url: string, refs: readonly string[], platforms: readonly Platform[], onLine: (s: string) => void): Promise<void> {
  for (const raw of refs) {
    const ref = parseImageRef(raw);
    const base = (path: string): string => `${url}/v2/${ref.repository}/${path}?ns=${encodeURIComponent(ref.registry)}`;
    const rootBytes = await get(base(`manifests/${ref.digest ?? ref.tag ?? 'latest'}`), raw, { accept: MANIFEST_ACCEPT });
    const root = parseManifest(rootBytes);
    const images = root.kind === 'image'
      ? [root]
      : await Promise.all(
          root.manifests
            .filter((d) => platforms.length === 0 || platforms.some((p) => platformMatches(d.platform, p)))
            .map(async (d) => parseManifest(await get(base(`manifests/${d.digest}`), `${raw} ${d.platform ? formatPlatform(d.platform) : d.digest}`, { accept: MANIFEST_ACCEPT }))),
        );
    for (const image of images) {
      if (image.kind !== 'image') continue;
      for (const blob of [image.config, ...image.layers]) await drain(base(`blobs/${blob.digest}`), `${raw} blob ${blob.digest}`);
    }
    onLine(`fetched ${raw}`);
  }
}

/** GET `/admin/export` of the running Gantry into `file`; its error body's message becomes the error. */
export async function exportThrough(url: string, refs: readonly string[], platforms: readonly Platform[], file: string, progress: { start(total: number): void; add(n: number): void }, adminToken?: string): Promise<void> {
  const q = new URLSearchParams([...refs.map((r): [string, string] => ['ref', r]), ...platforms.map((p): [string, string] => ['platform', formatPlatform(p)])]);
  const res = await call(`${url}/admin/export?${q.toString()}`, 'export', adminHeaders(adminToken));
  if (res.statusCode !== 200) throw new ExportError(await errorMessage(res.body, res.statusCode));
  progress.start(Number(res.headers[EXPORT_BYTES_HEADER.toLowerCase()] ?? 0));
  const count = new Transform({ transform(chunk: Buffer, _enc, cb) { progress.add(chunk.length); cb(null, chunk); } });
  await pipeline(res.body, count, createWriteStream(file));
}

async function get(u: string, what: string, headers: Record<string, string> = {}): Promise<Buffer> {
  const res = await call(u, what, headers);
  if (res.statusCode !== 200) throw new ExportError(`${what}: ${await errorMessage(res.body, res.statusCode)}`);
  return Buffer.from(await res.body.arrayBuffer());
}

async function drain(u: string, what: string): Promise<void> {
  const res = await call(u, what);
  if (res.statusCode !== 200) throw new ExportError(`${what}: ${await errorMessage(res.body, res.statusCode)}`);
  for await (const chunk of res.body) void chunk;
}

async function call(u: string, what: string, headers: Record<string, string> = {}): Promise<{ statusCode: number; headers: Record<string, string | string[] | undefined>; body: Readable & { arrayBuffer(): Promise<ArrayBuffer>; text(): Promise<string> } }> {
  try {
    return await request(u, { headers, headersTimeout: HEADERS_TIMEOUT_MS, bodyTimeout: BODY_TIMEOUT_MS });
  } catch (err) {
    throw new ExportError(`${what}: the running Gantry at ${new URL(u).origin} did not answer (${(err as Error).message})`);
  }
}

/** The message of an OCI error body, else `HTTP <status>`. */
export async function errorMessage(body: { text(): Promise<string> }, status: number): Promise<string> {
  return ociErrorMessage(await body.text().catch(() => '')) ?? `HTTP ${status}`;
}

/** The admin API's bearer token, when the config sets one (`adminToken`). */
export function adminHeaders(adminToken: string | undefined): Record<string, string> {
  return adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` };
}
