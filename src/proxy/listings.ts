import type { ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import { readBounded } from '../upstream/read-body.ts';
import type { ListingResponse } from '../upstream/registry-api.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';

export type ListingRequest = ResolvedTarget & {
  auth: ClientCredential;
  /** The client's Accept header, forwarded as it is. */
  accept: string | undefined;
  /** HEAD: the upstream is still sent a GET (distribution answers HEAD on tags/list with 405); the body is dropped. */
  headOnly: boolean;
};

/** A relayed listing: the headers a client may need and, for a GET, the body. */
export type Listing = { headers: Record<string, string>; bytes: Buffer | undefined };

/**
 * Tags and referrers: small JSON answers relayed from the upstream as they
 * are, never cached (X-Cache BYPASS), bounded in size.
 */
export class PassthroughListings {
  private readonly maxBytes: number;

  constructor(opts: { maxBytes: number }) {
    this.maxBytes = opts.maxBytes;
  }

  async tags(req: ListingRequest, q: { n?: string | undefined; last?: string | undefined }): Promise<Listing> {
    return this.relay(req, await req.upstream.listTags(req.remoteName, { ...q, accept: req.accept, auth: req.auth }));
  }

  async referrers(req: ListingRequest, subject: Digest, artifactType: string | undefined): Promise<Listing> {
    return this.relay(req, await req.upstream.getReferrers(req.remoteName, subject, { artifactType, accept: req.accept, auth: req.auth }));
  }

  private async relay(req: ListingRequest, res: ListingResponse): Promise<Listing> {
    if (req.headOnly) {
      await res.body.dump();
      return { headers: res.headers, bytes: undefined };
    }
    return { headers: res.headers, bytes: await readBounded(res.body, this.maxBytes) };
  }
}
