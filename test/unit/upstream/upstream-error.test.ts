import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { upstreamNetworkError, upstreamStatusToError } from '../../../src/upstream/upstream-error.ts';
import { RegistryError, toErrorBody } from '../../../src/oci/errors.ts';

const ociBody = (code: string, detail?: unknown): string => JSON.stringify({ errors: [{ code, message: 'upstream says so', detail }] });
const HTML = '<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1><script>x</script></body></html>';

/** Everything a client could see of the error. */
function visible(err: RegistryError): string {
  return JSON.stringify({ body: toErrorBody(err), headers: err.headers, message: err.message });
}

describe('upstreamStatusToError: 404', () => {
  test('keeps the upstream OCI code and detail', () => {
    const err = upstreamStatusToError('manifest', 404, ociBody('NAME_UNKNOWN', { name: 'x/y' }), {});
    assert.equal(err.code, 'NAME_UNKNOWN');
    assert.equal(err.status, 404);
    assert.deepEqual(err.detail, { name: 'x/y' });
  });

  test('keeps BLOB_UNKNOWN from the upstream on a blob', () => {
    const err = upstreamStatusToError('blob', 404, ociBody('BLOB_UNKNOWN'), {});
    assert.equal(err.code, 'BLOB_UNKNOWN');
    assert.equal(err.status, 404);
  });

  test('without a body, the code follows the route kind', () => {
    const cases = [
      ['blob', 'BLOB_UNKNOWN'],
      ['manifest', 'MANIFEST_UNKNOWN'],
      ['tags', 'NAME_UNKNOWN'],
      ['referrers', 'MANIFEST_UNKNOWN'],
    ] as const;
    for (const [kind, code] of cases) {
      const err = upstreamStatusToError(kind, 404, '', {});
      assert.equal(err.code, code, kind);
      assert.equal(err.status, 404, kind);
      assert.equal(err.detail, undefined, kind);
    }
  });

  test('an unknown or non-OCI upstream code falls back to the kind', () => {
    assert.equal(upstreamStatusToError('blob', 404, ociBody('SOMETHING_ELSE'), {}).code, 'BLOB_UNKNOWN');
    assert.equal(upstreamStatusToError('manifest', 404, '{"errors":[{"code":42}]}', {}).code, 'MANIFEST_UNKNOWN');
    assert.equal(upstreamStatusToError('manifest', 404, '{"errors":[]}', {}).code, 'MANIFEST_UNKNOWN');
  });

  test('an HTML 404 page becomes the kind code, with no trace of the HTML', () => {
    const err = upstreamStatusToError('blob', 404, HTML, { 'content-type': 'text/html' });
    assert.equal(err.code, 'BLOB_UNKNOWN');
    assert.equal(err.status, 404);
    assert.ok(!visible(err).includes('<'), visible(err));
  });
});

describe('upstreamStatusToError: auth and rate limiting', () => {
  test('401 is UNAUTHORIZED with the WWW-Authenticate challenge forwarded', () => {
    const challenge = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"';
    const err = upstreamStatusToError('manifest', 401, ociBody('UNAUTHORIZED', [{ Type: 'repository' }]), { 'www-authenticate': challenge });
    assert.equal(err.code, 'UNAUTHORIZED');
    assert.equal(err.status, 401);
    assert.equal(err.headers['WWW-Authenticate'], challenge);
    assert.deepEqual(err.detail, [{ Type: 'repository' }]);
  });

  test('401 without a challenge has no WWW-Authenticate', () => {
    const err = upstreamStatusToError('blob', 401, '', {});
    assert.equal(err.code, 'UNAUTHORIZED');
    assert.equal(err.status, 401);
    assert.equal(err.headers['WWW-Authenticate'], undefined);
  });

  test('403 is DENIED', () => {
    const err = upstreamStatusToError('blob', 403, '', {});
    assert.equal(err.code, 'DENIED');
    assert.equal(err.status, 403);
  });

  test('403 with an HTML body does not surface it', () => {
    const err = upstreamStatusToError('manifest', 403, HTML, {});
    assert.equal(err.code, 'DENIED');
    assert.ok(!visible(err).includes('<'), visible(err));
  });

  test('429 is TOOMANYREQUESTS with Retry-After forwarded', () => {
    const err = upstreamStatusToError('manifest', 429, ociBody('TOOMANYREQUESTS'), { 'retry-after': '120' });
    assert.equal(err.code, 'TOOMANYREQUESTS');
    assert.equal(err.status, 429);
    assert.equal(err.headers['Retry-After'], '120');
  });

  test('429 without Retry-After has none', () => {
    const err = upstreamStatusToError('blob', 429, '', {});
    assert.equal(err.status, 429);
    assert.equal(err.headers['Retry-After'], undefined);
  });
});

describe('upstreamStatusToError: server errors and the rest', () => {
  for (const status of [500, 502, 503, 504]) {
    test(`${status} becomes a 502 UNAVAILABLE`, () => {
      const err = upstreamStatusToError('blob', status, '', {});
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal(err.status, 502);
    });
  }

  test('a 503 HTML page never surfaces', () => {
    const err = upstreamStatusToError('manifest', 503, HTML, { 'content-type': 'text/html' });
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.status, 502);
    assert.equal(err.detail, undefined);
    assert.ok(!visible(err).includes('nginx'), visible(err));
    assert.ok(!visible(err).includes('<'), visible(err));
  });

  test('a 500 OCI body does not leak its code as the client code', () => {
    const err = upstreamStatusToError('blob', 500, ociBody('UNKNOWN', 'stack trace here'), {});
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.status, 502);
    assert.ok(!visible(err).includes('stack trace'));
  });

  test('400 with a pass-through OCI code keeps it', () => {
    const err = upstreamStatusToError('manifest', 400, ociBody('NAME_INVALID', { name: 'X' }), {});
    assert.equal(err.code, 'NAME_INVALID');
    assert.equal(err.status, 400);
    assert.deepEqual(err.detail, { name: 'X' });
  });

  test('400 without an OCI body is a 502', () => {
    const err = upstreamStatusToError('manifest', 400, HTML, {});
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.status, 502);
  });

  test('an unexpected status (e.g. 418) is a 502 UNAVAILABLE, never a 500', () => {
    const err = upstreamStatusToError('blob', 418, '', {});
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.status, 502);
  });

  test('never produces a 500 for any status in 400..599', () => {
    for (let s = 400; s < 600; s++) {
      for (const body of ['', HTML, ociBody('UNKNOWN')]) {
        assert.notEqual(upstreamStatusToError('blob', s, body, {}).status, 500, `status ${s}`);
      }
    }
  });

  test('Retry-After and WWW-Authenticate given as arrays are not forwarded as garbage', () => {
    const err = upstreamStatusToError('blob', 429, '', { 'retry-after': ['1', '2'] });
    assert.equal(err.headers['Retry-After'], undefined);
  });
});

describe('upstreamNetworkError', () => {
  const withCode = (code: string): Error => Object.assign(new Error(`boom ${code}`), { code });

  for (const code of ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']) {
    test(`${code} is a 504`, () => {
      const err = upstreamNetworkError(withCode(code));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal(err.status, 504);
      assert.deepEqual(err.detail, { cause: code });
    });
  }

  test('an AbortSignal.timeout TimeoutError is a 504', () => {
    const err = upstreamNetworkError(new DOMException('The operation timed out.', 'TimeoutError'));
    assert.equal(err.status, 504);
  });

  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'UND_ERR_SOCKET']) {
    test(`${code} is a 502`, () => {
      const err = upstreamNetworkError(withCode(code));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal(err.status, 502);
      assert.deepEqual(err.detail, { cause: code });
    });
  }

  test('keeps the original error as the cause', () => {
    const original = withCode('ECONNREFUSED');
    assert.equal(upstreamNetworkError(original).cause, original);
  });

  test('tolerates errors without a code, and non-errors', () => {
    for (const e of [new Error('x'), undefined, null, 'string', 42]) {
      const err = upstreamNetworkError(e);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal(err.status, 502);
      assert.equal(err.detail, undefined);
    }
  });
});
