import { RegistryError } from '../oci/errors.ts';
import { CONTENT_RANGE } from '../oci/headers.ts';
import type { ByteRange } from '../store/blob-store-api.ts';

const MAX_RANGE_HEADER_LENGTH = 100;

export type { ByteRange };

/**
 * Parse a Range header against a known size (RFC 9110 §14.1.2). Only a single
 * range is served; anything else we do not understand (other units, several
 * ranges) is ignored and the full body is sent, as RFC 9110 allows. An
 * unsatisfiable single range is a 416.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  // Bounded and anchored without nested optional whitespace: a regex with
  // `\s*(\d*)\s*` runs backtracks cubically on long runs of spaces (found by the fuzz test).
  if (!header || header.length > MAX_RANGE_HEADER_LENGTH) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.replace(/\s+/g, ''));
  if (!m) return undefined;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return undefined;
  let start: number;
  let end: number;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) throw unsatisfiable(size);
    start = Math.max(0, size - suffix);
    end = size;
  } else {
    start = Number(a);
    end = b === '' ? size : Math.min(Number(b) + 1, size);
    if (b !== '' && Number(b) < start) return undefined; // syntactically invalid: ignore
  }
  if (!Number.isSafeInteger(start) || start >= size || end <= start) throw unsatisfiable(size);
  return { start, end };
}

function unsatisfiable(size: number): RegistryError {
  return new RegistryError('RANGE_INVALID', {
    message: 'requested range not satisfiable',
    headers: { [CONTENT_RANGE]: `bytes */${size}` },
  });
}
