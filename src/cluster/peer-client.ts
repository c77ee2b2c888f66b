import { request, type Dispatcher } from 'undici';
import type { Digest } from '../oci/digest.ts';

/** The path of the peer endpoint, under a node's advertised URL (http/peer-routes.ts). */
export const PEER_BLOB_PATH = '/_gantry/peer/blobs/';
const HEADERS_TIMEOUT_MS = 5_000;
/** A filling node streams as its upstream does: silence this long means it is gone. */
const BODY_TIMEOUT_MS = 30_000;

/** `size` is undefined when the peer's own upstream sent no length (then only offset 0 is asked for). */
export type PeerBlob = { size: number | undefined; body: AsyncIterable<Uint8Array> & { destroy(): unknown } };

/**
 * Another node's copy of a blob it is downloading (or has), from `offset`: 'absent' when it has
 * none, 'unreachable' when it does not answer (it may have died: its lease will expire). Its bytes are checked like an upstream's: the fill that
 * reads them verifies the digest, so a peer that answers wrong bytes is caught.
 */
export async function openPeerBlob(peerUrl: string, peerToken: string, digest: Digest, offset: number, dispatcher?: Dispatcher): Promise<PeerBlob | 'absent' | 'unreachable'> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(`${peerUrl}${PEER_BLOB_PATH}${digest}`, {
      headers: { authorization: `Bearer ${peerToken}`, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
      headersTimeout: HEADERS_TIMEOUT_MS,
      bodyTimeout: BODY_TIMEOUT_MS,
      ...(dispatcher ? { dispatcher } : {}),
    });
  } catch {
    return 'unreachable';
  }
  const expected = offset > 0 ? 206 : 200;
  const size = res.statusCode === expected ? totalSize(res.headers, offset) : undefined;
  if (offset === 0 && res.statusCode === 200 && res.headers['content-length'] === undefined) return { size: undefined, body: res.body };
  if (size === undefined) {
    res.body.destroy();
    // A node that answers but has no copy (its download failed), or no range of one of unknown length: not worth waiting for.
    return res.statusCode >= 500 ? 'unreachable' : 'absent';
  }
  return { size, body: res.body };
}

function totalSize(headers: Dispatcher.ResponseData['headers'], offset: number): number | undefined {
  if (offset > 0) {
    const m = /\/(\d+)$/.exec(String(headers['content-range'] ?? ''));
    return m ? Number(m[1]) : undefined;
  }
  const n = Number(headers['content-length']);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}
