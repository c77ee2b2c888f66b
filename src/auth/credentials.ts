import { createHash } from 'node:crypto';

/**
 * Who a request speaks for, as far as upstream access goes.
 * - `none`: anonymous; Gantry uses its own upstream auth (anonymous token or configured credentials).
 * - `user`: a Gantry user (htpasswd); upstream access as for `none`.
 * - `bearer`: a token the client got from the upstream's realm itself: passed through as-is.
 * - `basic`: upstream credentials the client gave Gantry (directly, or via Gantry's token endpoint):
 *   Gantry relays them to the upstream realm for a token scoped to the upstream's repository name.
 */
export type ClientCredential =
  | { kind: 'none' }
  | { kind: 'user'; username: string }
  | { kind: 'bearer'; header: string }
  | { kind: 'basic'; header: string; username: string };

/** Content fetched with the client's own credential is private to what the upstream lets that credential see. */
export function isClientOwned(c: ClientCredential): c is Extract<ClientCredential, { kind: 'bearer' | 'basic' }> {
  return c.kind === 'bearer' || c.kind === 'basic';
}

/** A stable, non-reversible key for memoising per-credential decisions (never log the header itself). */
export function credentialKey(c: ClientCredential): string {
  switch (c.kind) {
    case 'none':
    case 'user':
      return 'gantry';
    case 'bearer':
    case 'basic':
      return createHash('sha256').update(c.header).digest('base64url').slice(0, 32);
  }
}

/** Parse a `Basic` header into its username and password; undefined if malformed. */
export function parseBasic(header: string): { username: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}
