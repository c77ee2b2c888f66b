import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import { createHash, timingSafeEqual } from 'node:crypto';
import { parseDigest, type Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { PullThroughBlobs } from '../proxy/blobs.ts';
import type { AppEnv } from './app-env.ts';
import { parseRange } from './range.ts';
import { BlobSender } from './send-blob.ts';

export type PeerServices = { blobs: PullThroughBlobs; metrics: Metrics; peerToken: string };

/**
 * The one endpoint the nodes sharing a cache call on each other: a blob this node is downloading
 * (streamed as it arrives, its last byte held back until verified, as for local clients) or has.
 * Only for callers with the peer secret: it skips access checks, which the asking node makes for
 * its own client, and it never starts a download.
 */
export function createPeerRoutes(svc: PeerServices): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const expected = hashOf(svc.peerToken);
  const sender = new BlobSender();
  app.get('/blobs/:digest', async (c) => {
    const auth = c.req.header('authorization') ?? '';
    if (!auth.startsWith('Bearer ') || !timingSafeEqual(hashOf(auth.slice('Bearer '.length)), expected)) {
      throw new RegistryError('UNAUTHORIZED', { message: 'the peer endpoint is for the other Gantry nodes only' });
    }
    let digest: Digest;
    try {
      digest = parseDigest(c.req.param('digest'));
    } catch {
      throw new RegistryError('DIGEST_INVALID', { message: 'not a digest' });
    }
    const found = await svc.blobs.forPeer(digest);
    if (!found) throw new RegistryError('BLOB_UNKNOWN', { message: 'this node has no copy of the blob' });
    const { size } = found;
    // A download of unknown length is streamed whole (chunked): a range of it cannot be said yet.
    if (size === undefined && c.req.header('range') !== undefined) throw new RegistryError('BLOB_UNKNOWN', { message: 'this node cannot send a range of a blob whose length it does not know yet' });
    const range = size === undefined ? undefined : parseRange(c.req.header('range'), size);
    const source = await found.open(range?.start ?? 0, range?.end ?? size);
    if (!source) throw new RegistryError('BLOB_UNKNOWN', { message: 'this node has no copy of the blob' });
    const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream' };
    if (size !== undefined) headers['Content-Length'] = range ? range.end - range.start : size;
    if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end - 1}/${size}`;
    sender.send(c.env.outgoing, range ? 206 : 200, headers, { body: source, stored: false }, c.get('stats'), c.get('log')());
    c.env.outgoing.once('close', () => svc.metrics.peerBytes.inc({ direction: 'sent' }, c.get('stats').bytes));
    return RESPONSE_ALREADY_SENT;
  });
  return app;
}

function hashOf(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
