import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { ClientCredential } from './credentials.ts';

const TOKEN_PREFIX = 'gantry.';
const MAX_LIVE_TOKENS = 100_000;

/**
 * Where tokens are kept for the other nodes sharing a cache (cluster/): by the token's hash (a
 * reader of the store cannot use what it sees), the credential sealed (it may hold an upstream
 * password). Best effort: when the store cannot be reached, tokens work on the node that issued them.
 */
export type TokenStore = {
  put(name: string, value: string, ttlMs: number): Promise<boolean>;
  get(name: string): Promise<string | undefined>;
  seal(plain: string): string;
  open(sealed: string): string | undefined;
};

/**
 * Tokens issued by Gantry's own /token endpoint: opaque random strings that
 * map to the credential they stand for, in memory and, with several nodes, in
 * the shared store so any node accepts them. Clients simply log in again on
 * the next 401.
 */
export class GantryTokens {
  private readonly tokens: LRUCache<string, ClientCredential>;
  readonly ttlSeconds: number;
  private readonly shared: TokenStore | undefined;

  constructor(ttlSeconds: number, shared?: TokenStore) {
    this.ttlSeconds = ttlSeconds;
    this.shared = shared;
    this.tokens = new LRUCache<string, ClientCredential>({ max: MAX_LIVE_TOKENS, ttl: ttlSeconds * 1000 });
  }

  async issue(cred: ClientCredential, ttlSeconds = this.ttlSeconds): Promise<string> {
    const token = TOKEN_PREFIX + randomBytes(24).toString('base64url');
    this.tokens.set(token, cred, { ttl: ttlSeconds * 1000 });
    await this.shared?.put(storeName(token), this.shared.seal(JSON.stringify({ cred, expiresAt: Date.now() + ttlSeconds * 1000 })), ttlSeconds * 1000);
    return token;
  }

  /** The credential behind one of our tokens (issued here or by another node); undefined if unknown or expired. */
  async lookup(token: string): Promise<ClientCredential | undefined> {
    const local = this.tokens.get(token);
    if (local || !this.shared) return local;
    const sealed = await this.shared.get(storeName(token));
    const found = sealed === undefined ? undefined : parseShared(this.shared.open(sealed));
    if (!found || found.expiresAt <= Date.now()) return undefined;
    this.tokens.set(token, found.cred, { ttl: found.expiresAt - Date.now() });
    return found.cred;
  }

  static isOurs(token: string): boolean {
    return token.startsWith(TOKEN_PREFIX);
  }
}

function storeName(token: string): string {
  return `token:${createHash('sha256').update(token).digest('base64url')}`;
}

function parseShared(plain: string | undefined): { cred: ClientCredential; expiresAt: number } | undefined {
  if (plain === undefined) return undefined;
  try {
    const v = JSON.parse(plain) as { cred?: ClientCredential; expiresAt?: unknown };
    return v.cred && typeof v.cred.kind === 'string' && typeof v.expiresAt === 'number' ? { cred: v.cred, expiresAt: v.expiresAt } : undefined;
  } catch {
    return undefined;
  }
}
