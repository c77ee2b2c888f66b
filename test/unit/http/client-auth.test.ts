import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Hono } from 'hono';
import { GantryTokens } from '../../../src/auth/gantry-tokens.ts';
import { DEFAULT_CONFIG } from '../../../src/config/config.ts';
import type { AppEnv } from '../../../src/http/app-env.ts';
import { gantryChallenge, GANTRY_SERVICE, type ClientAuthServices } from '../../../src/http/client-auth.ts';

/** The challenge Gantry's /v2/ would send for a request with `headers`. */
async function challenge(svc: Partial<ClientAuthServices>, headers: Record<string, string>): Promise<string> {
  const app = new Hono<AppEnv>();
  const services: ClientAuthServices = { authConfig: DEFAULT_CONFIG.auth, tokens: new GantryTokens(60), htpasswd: undefined, ...svc };
  app.get('/v2/', (c) => c.text(gantryChallenge(c, services, GANTRY_SERVICE)));
  return (await app.request('/v2/', { headers })).text();
}

describe("the token realm in Gantry's challenge", () => {
  test('plain HTTP: http://<Host>/token; https behind a proxy that says X-Forwarded-Proto: https', async () => {
    assert.equal(await challenge({}, { host: 'gantry.local:5000' }), 'Bearer realm="http://gantry.local:5000/token",service="gantry"');
    assert.match(await challenge({}, { host: 'gantry.local', 'x-forwarded-proto': 'https' }), /^Bearer realm="https:\/\/gantry\.local\/token"/);
  });

  test('Gantry serving HTTPS itself: https://<Host>/token, so clients fetch their token over TLS on the same port', async () => {
    assert.match(await challenge({ servesHttps: true }, { host: '127.0.0.1:5443' }), /^Bearer realm="https:\/\/127\.0\.0\.1:5443\/token"/);
  });

  test('auth.realm, when set, wins', async () => {
    const authConfig = { ...DEFAULT_CONFIG.auth, realm: 'https://auth.example/token' };
    assert.match(await challenge({ authConfig, servesHttps: false }, { host: 'x' }), /^Bearer realm="https:\/\/auth\.example\/token"/);
  });
});
