import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isRealmAllowed, parseChallenge, registrableDomain } from '../../../src/upstream/bearer-token.ts';

const HUB = 'https://registry-1.docker.io';

describe('parseChallenge', () => {
  test('parses a Docker Hub Bearer challenge', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    });
  });

  test('keeps commas inside quoted values', () => {
    const ch = parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"');
    assert.equal(ch?.params['scope'], 'repository:a/b:pull,push');
    assert.equal(ch?.params['service'], 'registry.docker.io');
  });

  test('keeps several comma-separated scopes inside one quoted value', () => {
    const ch = parseChallenge('Bearer realm="https://r/token",scope="repository:a:pull,push repository:b:pull"');
    assert.equal(ch?.params['scope'], 'repository:a:pull,push repository:b:pull');
  });

  test('parses a Basic challenge', () => {
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
  });

  test('scheme and parameter names are case-insensitive (lowercased); values keep their case', () => {
    assert.deepEqual(parseChallenge('BEARER Realm="https://Auth.Example/Token", SERVICE="Reg"'), {
      scheme: 'bearer',
      params: { realm: 'https://Auth.Example/Token', service: 'Reg' },
    });
  });

  test('accepts whitespace after commas and around =', () => {
    const ch = parseChallenge('Bearer realm = "https://auth.example/token" ,  service="svc"');
    assert.equal(ch?.params['realm'], 'https://auth.example/token');
    assert.equal(ch?.params['service'], 'svc');
  });

  test('accepts unquoted token values', () => {
    assert.deepEqual(parseChallenge('Bearer realm=https://auth.example/token,service=svc')?.params, {
      realm: 'https://auth.example/token',
      service: 'svc',
    });
  });

  test('unescapes backslash escapes in quoted strings', () => {
    assert.equal(parseChallenge('Basic realm="say \\"hi\\""')?.params['realm'], 'say "hi"');
  });

  test('an equals sign inside a quoted value is not a new parameter', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token?a=b",error="insufficient_scope"')?.params, {
      realm: 'https://auth.example/token?a=b',
      error: 'insufficient_scope',
    });
  });

  test('a scheme without parameters', () => {
    assert.deepEqual(parseChallenge('Negotiate'), { scheme: 'negotiate', params: {} });
  });

  test('no header or an empty one gives undefined', () => {
    assert.equal(parseChallenge(undefined), undefined);
    assert.equal(parseChallenge(''), undefined);
  });

  test('a header that does not start with a scheme gives undefined', () => {
    assert.equal(parseChallenge('="x"'), undefined);
    assert.equal(parseChallenge('   '), undefined);
  });

  test('only the first challenge of a multi-challenge header is parsed', () => {
    const ch = parseChallenge('Bearer realm="https://auth.example/token",service="reg", Basic realm="fallback"');
    assert.equal(ch?.scheme, 'bearer');
    assert.equal(ch?.params['realm'], 'https://auth.example/token');
    assert.equal(ch?.params['service'], 'reg');
  });
});

describe('registrableDomain', () => {
  test('is the last two labels of a name', () => {
    assert.equal(registrableDomain('registry-1.docker.io'), 'docker.io');
    assert.equal(registrableDomain('Auth.Docker.IO'), 'docker.io');
    assert.equal(registrableDomain('localhost'), 'localhost');
  });

  test('an IP address is its own domain', () => {
    assert.equal(registrableDomain('10.1.2.3'), '10.1.2.3');
    assert.equal(registrableDomain('[::1]'), '::1');
  });
});

describe('isRealmAllowed', () => {
  test('auth.docker.io may receive credentials for registry-1.docker.io', () => {
    assert.equal(isRealmAllowed('https://auth.docker.io/token', HUB), true);
  });

  test('the upstream host itself is allowed', () => {
    assert.equal(isRealmAllowed('https://ghcr.io/token', 'https://ghcr.io'), true);
  });

  test('a realm on another domain is refused', () => {
    assert.equal(isRealmAllowed('https://evil.example/token', HUB), false);
    assert.equal(isRealmAllowed('https://docker.io.evil.example/token', HUB), false);
    assert.equal(isRealmAllowed('https://evildocker.io/token', HUB), false);
  });

  test('the same IP on a different port is allowed', () => {
    assert.equal(isRealmAllowed('http://10.0.0.5:5001/auth', 'http://10.0.0.5:5000'), true);
  });

  test('a different IP is refused, even in the same /24', () => {
    assert.equal(isRealmAllowed('http://10.0.0.6:5000/auth', 'http://10.0.0.5:5000'), false);
  });

  test('an IPv6 upstream allows only the same address', () => {
    assert.equal(isRealmAllowed('http://[::1]:5001/auth', 'http://[::1]:5000'), true);
    assert.equal(isRealmAllowed('http://[::2]:5001/auth', 'http://[::1]:5000'), false);
  });

  test('a non-http(s) realm is refused even on the same domain', () => {
    assert.equal(isRealmAllowed('ftp://auth.docker.io/token', HUB), false);
    assert.equal(isRealmAllowed('file:///etc/passwd', HUB), false);
    assert.equal(isRealmAllowed('javascript:alert(1)', HUB), false);
  });

  test('a realm that is not a URL is refused', () => {
    assert.equal(isRealmAllowed('not a url', HUB), false);
    assert.equal(isRealmAllowed('', HUB), false);
    assert.equal(isRealmAllowed('/token', HUB), false);
  });

  test('an explicitly allowed extra host is accepted, matched on host[:port]', () => {
    assert.equal(isRealmAllowed('https://auth.example.com/token', 'https://registry.other.io', ['auth.example.com']), true);
    assert.equal(isRealmAllowed('https://Auth.Example.com/token', 'https://registry.other.io', ['auth.example.com']), true);
    assert.equal(isRealmAllowed('https://auth.example.com:8443/token', 'https://registry.other.io', ['auth.example.com:8443']), true);
    assert.equal(isRealmAllowed('https://auth.example.com:8443/token', 'https://registry.other.io', ['auth.example.com']), false);
    assert.equal(isRealmAllowed('https://other.example.net/token', 'https://registry.other.io', ['auth.example.com']), false);
  });

  test('a realm on another site under a two-label public suffix is refused (evil.co.uk for registry.co.uk)', () => {
    // The doc comment on registrableDomain says evil.co.uk is not accepted for registry.co.uk.
    assert.equal(isRealmAllowed('https://evil.co.uk/token', 'https://registry.co.uk'), false);
  });
});
