import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { ClientCredential } from './credentials.ts';

const TOKEN_PREFIX = 'gantry.';
const MAX_LIVE_TOKENS = 100_000;

/**
 * Tokens issued by Gantry's own /token endpoint: opaque random strings that
 * map, in memory, to the credential they stand for. They die with the
 * process; clients simply log in again on the next 401.
 */
export class GantryTokens {
  private readonly tokens: LRUCache<string, ClientCredential>;
  readonly ttlSeconds: number;

  constructor(ttlSeconds: number) {
    this.ttlSeconds = ttlSeconds;
    this.tokens = new LRUCache<string, ClientCredential>({ max: MAX_LIVE_TOKENS, ttl: ttlSeconds * 1000 });
  }

  issue(cred: ClientCredential, ttlSeconds = this.ttlSeconds): string {
    const token = TOKEN_PREFIX + randomBytes(24).toString('base64url');
    this.tokens.set(token, cred, { ttl: ttlSeconds * 1000 });
    return token;
  }

  /** The credential behind one of our tokens; undefined if unknown or expired. */
  lookup(token: string): ClientCredential | undefined {
    return this.tokens.get(token);
  }

  static isOurs(token: string): boolean {
    return token.startsWith(TOKEN_PREFIX);
  }
}
