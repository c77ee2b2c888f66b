import { formatImageRef, parseImageRef } from '../oci/image-ref.ts';
import { formatPlatform, parsePlatform } from '../oci/manifest.ts';

/** An image of a job: queued, being fetched, done, or failed with the reason. */
export type ImageState = 'queued' | 'running' | 'done' | 'failed';
/** A job is done when every image is done, failed when it has finished and any image failed. */
export type JobState = 'queued' | 'running' | 'done' | 'failed';

export type PrefetchImage = {
  /** The reference as given, normalised (`docker.io/library/nginx:1.27`). */
  ref: string;
  /** The root manifest's digest, once resolved. */
  digest?: string;
  state: ImageState;
  blobs: number;
  blobsDone: number;
  bytes: number;
  bytesDone: number;
  error?: string;
};

export type PrefetchJob = {
  id: string;
  state: JobState;
  createdAt: string;
  finishedAt?: string;
  platforms: string[];
  pin: boolean;
  images: PrefetchImage[];
  /** In a cluster, the node that runs (or ran) the job; absent on a single node and in older records. */
  node?: string;
};

/** What `POST /admin/prefetch` asks for, validated and normalised. */
export type PrefetchRequest = { images: string[]; platforms: string[]; pin: boolean };

/** Bad input to a prefetch: the message says which field and why. */
export class PrefetchInputError extends Error {}

export const MAX_IMAGES_PER_JOB = 1000;
const MAX_PLATFORMS = 32;
const FIELDS = new Set(['images', 'platforms', 'pin']);

/**
 * Validate a request body: `images` (1 to 1000 references), optional `platforms`
 * (`os/arch[/variant]`) and `pin` (boolean). Unknown fields are refused, so a typo such as
 * `platform` is an error rather than a silently unfiltered prefetch. References are normalised
 * and deduplicated, in order.
 */
export function parsePrefetchRequest(body: unknown): PrefetchRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new PrefetchInputError('the body must be a JSON object: {"images": [...], "platforms": [...], "pin": false}');
  const fields = body as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!FIELDS.has(key)) throw new PrefetchInputError(`unknown field ${JSON.stringify(key.slice(0, 64))} (expected images, platforms, pin)`);
  }
  const images = stringList(fields['images'], 'images', MAX_IMAGES_PER_JOB);
  if (images.length === 0) throw new PrefetchInputError('images: name at least one image');
  const platforms = fields['platforms'] === undefined ? [] : stringList(fields['platforms'], 'platforms', MAX_PLATFORMS);
  const pin = fields['pin'] ?? false;
  if (typeof pin !== 'boolean') throw new PrefetchInputError('pin: expected true or false');
  return {
    images: [...new Set(images.map((raw) => formatImageRef(parseOr(raw, parseImageRef))))],
    platforms: [...new Set(platforms.map((raw) => formatPlatform(parseOr(raw, parsePlatform))))],
    pin,
  };
}

function stringList(value: unknown, field: string, max: number): string[] {
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) throw new PrefetchInputError(`${field}: expected a list of strings`);
  if (value.length > max) throw new PrefetchInputError(`${field}: at most ${max} entries (got ${value.length})`);
  return value;
}

function parseOr<T>(raw: string, parse: (s: string) => T): T {
  try {
    return parse(raw);
  } catch (err) {
    throw new PrefetchInputError((err as Error).message);
  }
}

export function newJob(id: string, req: PrefetchRequest, now: Date): PrefetchJob {
  return {
    id,
    state: 'queued',
    createdAt: now.toISOString(),
    platforms: req.platforms,
    pin: req.pin,
    images: req.images.map((ref) => ({ ref, state: 'queued', blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 })),
  };
}

/** The job's state from its images'. */
export function jobStateOf(images: readonly PrefetchImage[]): JobState {
  if (images.some((i) => i.state === 'queued' || i.state === 'running')) return images.some((i) => i.state !== 'queued') ? 'running' : 'queued';
  return images.some((i) => i.state === 'failed') ? 'failed' : 'done';
}

export function isFinished(job: Pick<PrefetchJob, 'state'>): boolean {
  return job.state === 'done' || job.state === 'failed';
}

/**
 * A job read back from the index, checked field by field: a record that does not fit (written by
 * another version, or damaged) is skipped with a warning rather than crashing start-up.
 */
export function isPrefetchJob(value: unknown): value is PrefetchJob {
  if (typeof value !== 'object' || value === null) return false;
  const j = value as Record<string, unknown>;
  return typeof j['id'] === 'string' && isOneOf(j['state'], ['queued', 'running', 'done', 'failed']) && typeof j['createdAt'] === 'string'
    && typeof j['pin'] === 'boolean' && Array.isArray(j['platforms']) && j['platforms'].every((p) => typeof p === 'string')
    && Array.isArray(j['images']) && j['images'].every(isPrefetchImage) && (j['node'] === undefined || typeof j['node'] === 'string');
}

function isPrefetchImage(value: unknown): value is PrefetchImage {
  if (typeof value !== 'object' || value === null) return false;
  const i = value as Record<string, unknown>;
  return typeof i['ref'] === 'string' && isOneOf(i['state'], ['queued', 'running', 'done', 'failed'])
    && ['blobs', 'blobsDone', 'bytes', 'bytesDone'].every((k) => typeof i[k] === 'number');
}

function isOneOf(v: unknown, values: readonly string[]): boolean {
  return typeof v === 'string' && values.includes(v);
}
