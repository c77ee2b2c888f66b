import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ociErrorMessage, RegistryError, toErrorBody } from '../../../src/oci/errors.ts';

test('ociErrorMessage reads the first message of an OCI error body, and nothing else', () => {
  const body = JSON.stringify(toErrorBody(new RegistryError('NAME_INVALID', { message: 'images: name at least one image' })));
  assert.equal(ociErrorMessage(body), 'images: name at least one image');
  assert.equal(ociErrorMessage('{"errors":[{"code":"X","message":"first"},{"message":"second"}]}'), 'first');
  for (const other of ['', 'not json', '<html>502</html>', 'null', '{}', '{"errors":[]}', '{"errors":[{"message":""}]}', '{"errors":[{"message":3}]}']) {
    assert.equal(ociErrorMessage(other), undefined, other);
  }
});
