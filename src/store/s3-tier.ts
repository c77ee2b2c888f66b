import {
  AbortMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import type { S3Config } from '../config/config.ts';
import { parseDigest, type Digest } from '../oci/digest.ts';
import type { BudgetedStore, StoredObject } from './s3-budget.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { SharedMeta, SharedObject, SharedTier, SharedUpload } from './shared-tier.ts';

/** Parts of a multipart upload: S3's minimum, so an upload holds little memory (`QUEUE` parts at once). */
const PART_BYTES = 5 * 1024 * 1024;
const QUEUE = 2;
/** Bytes a download may run ahead of its upload before it waits for S3. */
const AHEAD_BYTES = 1024 * 1024;
/** An upload that takes no bytes for this long is dropped: the download never waits on S3 longer. */
const STALL_MS = 30_000;
/** After an error, S3 is skipped (the node works alone) and probed this often until it answers again. */
const PROBE_MS = 2_000;
/** Connecting, and then each silence of a request, longer than this is an error. */
const CONNECT_TIMEOUT_MS = 3_000;
const IDLE_TIMEOUT_MS = 30_000;
/** On close, uploads still running get this long to finish before they are aborted. */
const CLOSE_GRACE_MS = 5_000;
const META_RESTRICTED = 'gantry-restricted';

export type S3TierOptions = { config: S3Config & { bucket: string }; log: Logger; metrics: Metrics };

/**
 * The shared tier in an S3-compatible bucket: one object per digest under `<prefix>blobs/<alg>/<hex>`,
 * with the restricted flag in its metadata. Objects appear only through a completed upload, which
 * happens only after the bytes were verified (SharedUpload.complete), so a content key never holds
 * unverified or partial bytes; an interrupted multipart upload stays invisible (a bucket lifecycle
 * rule for incomplete uploads clears its parts).
 */
/** Told when objects are completed or read (the budget's recency). */
export type TierUsage = { stored(digest: Digest, size: number): void; read(digest: Digest): void };

export class S3Tier implements SharedTier, BudgetedStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly uploads = new Set<S3Upload>();
  private down = false;
  private usage: TierUsage | undefined;
  private probeTimer: NodeJS.Timeout | undefined;

  private constructor(opts: S3TierOptions) {
    const { config } = opts;
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.log = opts.log.child({ tier: 's3' });
    this.metrics = opts.metrics;
    this.client = new S3Client({
      region: config.region ?? (config.endpoint !== undefined ? 'us-east-1' : undefined),
      ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
      forcePathStyle: config.forcePathStyle,
      // Checksums only where S3 requires them: streamed bodies are then sent plainly, not
      // `aws-chunked`, which S3-compatible servers such as Swift's s3api refuse.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: IDLE_TIMEOUT_MS },
      maxAttempts: 2,
    });
  }

  /** Connect and check the bucket is there and ours to use: at start-up, a clear error rather than failures later. */
  static async connect(opts: S3TierOptions): Promise<S3Tier> {
    const tier = new S3Tier(opts);
    try {
      await tier.client.send(new HeadBucketCommand({ Bucket: tier.bucket }), { abortSignal: AbortSignal.timeout(CONNECT_TIMEOUT_MS * 3) });
    } catch (err) {
      tier.client.destroy();
      throw new Error(`storage.s3: bucket ${tier.bucket} at ${opts.config.endpoint ?? 'AWS'} cannot be used: ${describe(err)}`, { cause: err });
    }
    tier.metrics.sharedUp.set(1);
    return tier;
  }

  async open(digest: Digest, offset = 0): Promise<SharedObject | undefined> {
    if (this.down) return undefined;
    let out: GetObjectCommandOutput;
    try {
      out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest), ...(offset > 0 ? { Range: `bytes=${offset}-` } : {}) }));
    } catch (err) {
      if (statusOf(err) === 404) {
        this.answered();
        this.metrics.sharedRequests.inc({ op: 'open', result: 'miss' });
        return undefined;
      }
      this.trouble(err, 'open');
      return undefined;
    }
    this.answered();
    const size = totalSize(out, offset);
    const body = out.Body as Readable | undefined;
    if (size === undefined || !body) {
      (body as Readable | undefined)?.destroy();
      this.trouble(new Error('S3 answered without a size or a body'), 'open');
      return undefined;
    }
    this.metrics.sharedRequests.inc({ op: 'open', result: 'hit' });
    this.usage?.read(digest);
    return { size, meta: { restricted: out.Metadata?.[META_RESTRICTED] === '1', mediaType: out.ContentType ?? 'application/octet-stream' }, body };
  }

  upload(digest: Digest, _size: number | undefined, meta: SharedMeta): SharedUpload {
    if (this.down) {
      this.metrics.sharedRequests.inc({ op: 'upload', result: 'dropped' });
      return NO_UPLOAD;
    }
    const upload = new S3Upload(this, digest, meta);
    this.uploads.add(upload);
    void upload.finished.then(() => this.uploads.delete(upload));
    return upload;
  }

  async put(digest: Digest, bytes: Uint8Array, meta: SharedMeta): Promise<void> {
    if (this.down) return;
    try {
      await this.client.send(new PutObjectCommand({ ...this.objectParams(digest, meta), Body: bytes, ContentLength: bytes.length }));
      this.answered();
      this.metrics.sharedRequests.inc({ op: 'put', result: 'done' });
      this.metrics.sharedBytes.inc({ direction: 'written' }, bytes.length);
      this.usage?.stored(digest, bytes.length);
    } catch (err) {
      this.trouble(err, 'put');
    }
  }

  async close(): Promise<void> {
    const running = [...this.uploads];
    const grace = new Promise((r) => setTimeout(r, CLOSE_GRACE_MS).unref());
    await Promise.race([Promise.all(running.map((u) => u.finished)), grace]);
    await Promise.all(running.map((u) => u.abort()));
    clearTimeout(this.probeTimer);
    this.client.destroy();
  }

  /** @internal for S3Upload */
  startUpload(digest: Digest, meta: SharedMeta, body: Readable): Upload {
    return new Upload({ client: this.client, params: { ...this.objectParams(digest, meta), Body: body }, partSize: PART_BYTES, queueSize: QUEUE, leavePartsOnError: false });
  }

  used(digest: Digest): void {
    this.usage?.read(digest);
  }

  /** Report completed and read objects to `usage` (the budget). */
  observe(usage: TierUsage): void {
    this.usage = usage;
  }

  /** Every object under the prefix (for the budget), page by page. */
  async *list(): AsyncIterable<StoredObject> {
    let token: string | undefined;
    const prefix = `${this.prefix}blobs/`;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
      for (const o of page.Contents ?? []) {
        const digest = digestOfKey(o.Key?.slice(prefix.length) ?? '');
        if (digest && o.Size !== undefined) yield { digest, size: o.Size, lastModified: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async remove(digest: Digest): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }));
  }

  /** @internal for S3Upload */
  uploadEnded(result: 'done' | 'aborted' | 'error', bytes: number, err?: unknown, digest?: Digest): void {
    if (result === 'error') {
      this.trouble(err, 'upload');
      return;
    }
    if (result === 'done') {
      this.answered();
      this.metrics.sharedBytes.inc({ direction: 'written' }, bytes);
      if (digest) this.usage?.stored(digest, bytes);
    }
    this.metrics.sharedRequests.inc({ op: 'upload', result });
  }

  /**
   * @internal for S3Upload: once an object is complete, other uploads of the same key are leftovers
   * (a node killed mid-download leaves its parts behind): abort them, so nothing partial stays in
   * the bucket. One still running elsewhere only loses a copy of bytes that are already there.
   */
  async dropLeftovers(digest: Digest): Promise<void> {
    const key = this.keyOf(digest);
    try {
      const listed = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key }));
      for (const u of listed.Uploads ?? []) {
        if (u.Key !== key || u.UploadId === undefined) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: u.UploadId }));
        this.metrics.sharedRequests.inc({ op: 'upload', result: 'leftover_aborted' });
      }
    } catch (err) {
      this.log.warn({ digest, err: describe(err) }, 'could not clear leftover uploads of a completed object');
    }
  }

  /** @internal for S3Upload */
  dropped(digest: Digest, why: string): void {
    this.metrics.sharedRequests.inc({ op: 'upload', result: 'dropped' });
    this.log.warn({ digest, why }, 'upload to the shared tier dropped; the blob stays on this node only');
  }

  private objectParams(digest: Digest, meta: SharedMeta) {
    return { Bucket: this.bucket, Key: this.keyOf(digest), ContentType: meta.mediaType, Metadata: { [META_RESTRICTED]: meta.restricted ? '1' : '0' } };
  }

  private keyOf(digest: Digest): string {
    const colon = digest.indexOf(':');
    return `${this.prefix}blobs/${digest.slice(0, colon)}/${digest.slice(colon + 1)}`;
  }

  get up(): boolean {
    return !this.down;
  }

  private answered(): void {
    if (!this.down) return;
    this.down = false;
    clearTimeout(this.probeTimer);
    this.metrics.sharedUp.set(1);
    this.log.warn('the shared tier answers again');
  }

  /**
   * An error other than "not there": count it, and skip the tier until a probe of the bucket
   * answers, logging once per episode (a tier that is down costs clients nothing, not even a
   * timeout per request).
   */
  private trouble(err: unknown, op: 'open' | 'upload' | 'put'): void {
    this.metrics.sharedRequests.inc({ op, result: 'error' });
    if (this.down) return;
    this.down = true;
    this.metrics.sharedUp.set(0);
    this.log.error({ op, err: describe(err), probeEveryMs: PROBE_MS }, 'the shared tier failed; working from the local disk and the upstreams alone until it answers again');
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    this.probeTimer = setTimeout(() => {
      this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: AbortSignal.timeout(PROBE_MS) }).then(
        () => this.answered(),
        () => this.scheduleProbe(),
      );
    }, PROBE_MS);
    this.probeTimer.unref();
  }
}

/**
 * One blob going to S3 while it downloads: chunks pass through a small buffer into a multipart
 * upload (a single PUT when the blob is under one part), which completes only when complete() ends
 * the stream; abort() or a stall abandons it, and S3 then discards its parts.
 */
class S3Upload implements SharedUpload {
  readonly finished: Promise<void>;
  private readonly tier: S3Tier;
  private readonly digest: Digest;
  private readonly stream = new PassThrough({ highWaterMark: AHEAD_BYTES });
  private readonly upload: Upload;
  private state: 'open' | 'completing' | 'aborted' | 'failed' = 'open';
  private bytes = 0;
  private failure: unknown;

  constructor(tier: S3Tier, digest: Digest, meta: SharedMeta) {
    this.tier = tier;
    this.digest = digest;
    this.upload = tier.startUpload(digest, meta, this.stream);
    this.finished = this.upload.done().then(
      () => undefined,
      (err: unknown) => {
        if (this.state === 'open' || this.state === 'completing') {
          this.state = 'failed';
          this.failure = err;
          this.stream.destroy();
        }
      },
    );
  }

  async write(chunks: readonly Uint8Array[]): Promise<void> {
    for (const chunk of chunks) {
      if (this.state !== 'open') return;
      this.bytes += chunk.length;
      if (this.stream.write(chunk)) continue;
      const drained = await Promise.race([
        once(this.stream, 'drain').then(() => true, () => false),
        this.finished.then(() => false),
        new Promise<false>((r) => setTimeout(r, STALL_MS, false).unref()),
      ]);
      if (!drained && this.state === 'open') {
        this.tier.dropped(this.digest, `S3 took no bytes for ${STALL_MS / 1000} s`);
        await this.abandon();
      }
    }
  }

  async complete(): Promise<void> {
    if (this.state !== 'open') {
      if (this.state === 'failed') this.tier.uploadEnded('error', this.bytes, this.failure);
      return;
    }
    this.state = 'completing';
    this.stream.end();
    await this.finished;
    // A failure while completing is S3's: the blob stays local only.
    const done = this.state === 'completing';
    this.tier.uploadEnded(done ? 'done' : 'error', this.bytes, this.failure, this.digest);
    if (done) await this.tier.dropLeftovers(this.digest);
  }

  async abort(): Promise<void> {
    if (this.state !== 'open' && this.state !== 'completing') return;
    await this.abandon();
    this.tier.uploadEnded('aborted', this.bytes);
  }

  /** Nothing becomes visible: abort the upload, then end its stream so its part readers stop and S3 is told. */
  private async abandon(): Promise<void> {
    this.state = 'aborted';
    await this.upload.abort().catch(() => undefined);
    this.stream.destroy();
    await this.finished;
  }
}

/** For a tier that is down: downloads go on without a copy. */
const NO_UPLOAD: SharedUpload = { write: async () => undefined, complete: async () => undefined, abort: async () => undefined };

/** The whole object's size, from Content-Range when a Range was asked for. */
function totalSize(out: GetObjectCommandOutput, offset: number): number | undefined {
  if (offset === 0) return out.ContentLength;
  const m = /\/(\d+)$/.exec(out.ContentRange ?? '');
  return m ? Number(m[1]) : undefined;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/** An error as one line: S3's code and status when it answered, the network error's otherwise. */
function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; code?: string };
  const status = statusOf(err);
  return [e.name, status !== undefined ? `HTTP ${status}` : e.code, e.message].filter((x) => x !== undefined && x !== '').join(': ');
}

/** `<alg>/<hex>` back to `<alg>:<hex>`; undefined for a key that is not one of ours. */
function digestOfKey(rest: string): Digest | undefined {
  try {
    return parseDigest(rest.replace('/', ':'));
  } catch {
    return undefined;
  }
}
