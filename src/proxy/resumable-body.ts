import { classifyIoError, isResumable } from '../io/io-error.ts';
import type { Logger } from '../observability/logger.ts';

/** Fetch the rest of a blob from `offset` (a Range request); resolves to its body. */
export type ResumeFrom = (offset: number) => Promise<AsyncIterable<Uint8Array>>;

/**
 * The bytes of an upstream body, resumed with `Range: bytes=N-` when the
 * connection is cut mid-way. Registries serve blobs by digest, so the rest of
 * the bytes are the same bytes; the fill's hash over the whole stream still
 * proves it. Gives up after `maxResumes` cuts, and never resumes after our
 * own deadline or shutdown aborted the download.
 */
export async function* resumableBody(
  first: AsyncIterable<Uint8Array>,
  resume: ResumeFrom,
  opts: { maxResumes: number; signal: AbortSignal; log: Logger; onResume?: () => void },
): AsyncGenerator<Uint8Array> {
  let body = first;
  let offset = 0;
  for (let resumes = 0; ; ) {
    try {
      for await (const chunk of body) {
        offset += chunk.length;
        yield chunk;
      }
      return;
    } catch (err) {
      if (opts.signal.aborted || resumes >= opts.maxResumes || !isResumable(classifyIoError(err))) throw err;
      resumes += 1;
      opts.log.warn({ offset, attempt: resumes, err: (err as Error).message }, 'upstream cut the blob; resuming with a Range request');
      opts.onResume?.();
      body = await resume(offset);
    }
  }
}
