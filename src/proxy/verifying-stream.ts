import { Transform, type TransformCallback } from 'node:stream';
import { createDigester, digestAlgorithm, type Digest } from '../oci/digest.ts';

/**
 * Pass bytes through while hashing them, holding back the last chunk until
 * the end proves the digest (and size). On a mismatch the stream errors
 * instead, so a client streaming straight from the upstream (cache bypassed)
 * still never receives a complete, wrong blob.
 */
export function createVerifyingStream(digest: Digest, expectedSize: number | undefined): Transform {
  const digester = createDigester(digestAlgorithm(digest));
  let held: Buffer | undefined;
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      digester.update(chunk);
      size += chunk.length;
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb: TransformCallback) {
      if (expectedSize !== undefined && size !== expectedSize) return cb(new Error(`expected ${expectedSize} bytes, got ${size}`));
      const actual = digester.digest();
      if (actual !== digest) return cb(new Error(`bytes hash to ${actual}, not ${digest}`));
      cb(null, held);
    },
  });
}
