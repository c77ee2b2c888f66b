import { RegistryError } from '../oci/errors.ts';

/** A satisfiable byte range, end exclusive. */
export type ByteRange = { start: number; end: number };

/**
 * Parse a Range header against a known size (RFC 9110 §14.1.2). Only a single
 * range is served; anything else we do not understand (other units, several
 * ranges) is ignored and the full body is sent, as RFC 9110 allows. An
 * unsatisfiable single range is a 416.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
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
    headers: { 'Content-Range': `bytes */${size}` },
  });
}
