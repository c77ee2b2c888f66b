import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  MANIFEST_ACCEPT,
  MT_DOCKER_MANIFEST,
  MT_DOCKER_MANIFEST_LIST,
  MT_DOCKER_MANIFEST_V1_SIGNED,
  MT_OCI_INDEX,
  MT_OCI_MANIFEST,
  acceptsMediaType,
  parseAccept,
  sniffManifestMediaType,
} from '../../../src/oci/media-types.ts';

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

describe('parseAccept', () => {
  test('an empty list of header values gives no types', () => {
    assert.deepEqual(parseAccept([]), []);
    assert.deepEqual(parseAccept(['']), []);
  });

  test('splits one comma-separated header value', () => {
    assert.deepEqual(parseAccept([`${MT_OCI_INDEX}, ${MT_OCI_MANIFEST}`]), [MT_OCI_INDEX, MT_OCI_MANIFEST]);
  });

  test('concatenates several header values (dockerd sends one line per type), in order', () => {
    assert.deepEqual(parseAccept([MT_DOCKER_MANIFEST, `${MT_DOCKER_MANIFEST_LIST},${MT_OCI_INDEX}`, MT_OCI_MANIFEST]), [
      MT_DOCKER_MANIFEST,
      MT_DOCKER_MANIFEST_LIST,
      MT_OCI_INDEX,
      MT_OCI_MANIFEST,
    ]);
  });

  test('drops parameters such as q-values', () => {
    assert.deepEqual(parseAccept([`${MT_OCI_MANIFEST};q=0.5, ${MT_DOCKER_MANIFEST} ; q=0.9 ; charset=utf-8`]), [MT_OCI_MANIFEST, MT_DOCKER_MANIFEST]);
  });

  test('trims whitespace (spaces and tabs) and skips empty elements', () => {
    assert.deepEqual(parseAccept([`  ${MT_OCI_MANIFEST}  ,, \t${MT_OCI_INDEX}\t, `]), [MT_OCI_MANIFEST, MT_OCI_INDEX]);
  });

  test('lowercases media types', () => {
    assert.deepEqual(parseAccept(['Application/VND.OCI.Image.Manifest.v1+JSON']), [MT_OCI_MANIFEST]);
  });

  test('parses the MANIFEST_ACCEPT Gantry sends upstream into the four manifest types', () => {
    assert.deepEqual(parseAccept([MANIFEST_ACCEPT]), [MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST_LIST, MT_DOCKER_MANIFEST]);
  });
});

describe('acceptsMediaType', () => {
  test('an empty Accept list accepts every type', () => {
    assert.equal(acceptsMediaType([], MT_OCI_MANIFEST), true);
    assert.equal(acceptsMediaType([], 'text/plain'), true);
  });

  test('*/* accepts every type', () => {
    assert.equal(acceptsMediaType(['*/*'], MT_DOCKER_MANIFEST_LIST), true);
  });

  test('an exact match is accepted, case-insensitively on the served type', () => {
    assert.equal(acceptsMediaType([MT_OCI_MANIFEST], MT_OCI_MANIFEST), true);
    assert.equal(acceptsMediaType([MT_OCI_MANIFEST], MT_OCI_MANIFEST.toUpperCase()), true);
  });

  test('a type not in the list is refused', () => {
    assert.equal(acceptsMediaType([MT_DOCKER_MANIFEST], MT_OCI_INDEX), false);
    assert.equal(acceptsMediaType([MT_OCI_MANIFEST, MT_DOCKER_MANIFEST], MT_DOCKER_MANIFEST_LIST), false);
  });

  test('a type/* wildcard accepts only that top-level type', () => {
    assert.equal(acceptsMediaType(['application/*'], MT_OCI_INDEX), true);
    assert.equal(acceptsMediaType(['text/*'], MT_OCI_INDEX), false);
  });

  test('a prefix of a type is not a match', () => {
    assert.equal(acceptsMediaType(['application/vnd.oci.image.manifest.v1'], MT_OCI_MANIFEST), false);
  });

  test('works on the output of parseAccept', () => {
    const accepted = parseAccept([`${MT_DOCKER_MANIFEST};q=0.5`, MT_DOCKER_MANIFEST_LIST]);
    assert.equal(acceptsMediaType(accepted, MT_DOCKER_MANIFEST), true);
    assert.equal(acceptsMediaType(accepted, MT_OCI_MANIFEST), false);
  });
});

describe('sniffManifestMediaType', () => {
  test('uses the mediaType field when present', () => {
    assert.equal(sniffManifestMediaType(json({ schemaVersion: 2, mediaType: MT_DOCKER_MANIFEST, layers: [] })), MT_DOCKER_MANIFEST);
    assert.equal(sniffManifestMediaType(json({ schemaVersion: 2, mediaType: MT_DOCKER_MANIFEST_LIST, manifests: [] })), MT_DOCKER_MANIFEST_LIST);
  });

  test('a manifests array without mediaType is an OCI index', () => {
    assert.equal(sniffManifestMediaType(json({ schemaVersion: 2, manifests: [] })), MT_OCI_INDEX);
  });

  test('a config/layers manifest without mediaType is an OCI image manifest', () => {
    assert.equal(sniffManifestMediaType(json({ schemaVersion: 2, config: {}, layers: [] })), MT_OCI_MANIFEST);
  });

  test('schemaVersion 1 is a signed Docker v1 manifest', () => {
    assert.equal(sniffManifestMediaType(json({ schemaVersion: 1, name: 'a', tag: 'b', fsLayers: [], signatures: [] })), MT_DOCKER_MANIFEST_V1_SIGNED);
  });

  test('a non-JSON body gives undefined', () => {
    assert.equal(sniffManifestMediaType(new TextEncoder().encode('<html>nope</html>')), undefined);
    assert.equal(sniffManifestMediaType(new Uint8Array(0)), undefined);
  });

  test('JSON that is not an object gives undefined', () => {
    assert.equal(sniffManifestMediaType(json(null)), undefined);
    assert.equal(sniffManifestMediaType(json('x')), undefined);
    assert.equal(sniffManifestMediaType(json(42)), undefined);
  });

  test('a non-string mediaType field is ignored in favour of the shape', () => {
    assert.equal(sniffManifestMediaType(json({ mediaType: 7, manifests: [] })), MT_OCI_INDEX);
  });
});
