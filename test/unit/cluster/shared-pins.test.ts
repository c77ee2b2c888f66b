// The rule that merges this node's pins with the cluster's: the latest event per reference wins.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Digest } from '../../../src/oci/digest.ts';
import { parsePins, planPinSync, type PinSides } from '../../../src/cluster/shared-pins.ts';
import { tagKey, type PinRecord } from '../../../src/store/index-store.ts';

const D = `sha256:${'a'.repeat(64)}` as Digest;
const pin = (reference: string, pinnedAt: number): PinRecord => ({ upstream: 'docker.io', repo: 'team/app', reference, digests: [D], pinnedAt });
const key = (reference: string): string => tagKey('docker.io', 'team/app', reference);

function sides(s: Partial<{ local: PinRecord[]; localUnpins: Array<[string, number]>; remote: PinRecord[]; remoteUnpins: Array<[string, number]> }>): PinSides {
  const remote = s.remote ?? [];
  return {
    localPins: new Map((s.local ?? []).map((p) => [key(p.reference), p])),
    localUnpins: new Map((s.localUnpins ?? []).map(([r, at]) => [key(r), at])),
    remotePins: new Map(remote.map((p) => [key(p.reference), p])),
    remoteTimes: new Map([...remote.map((p): [string, number] => [key(p.reference), p.pinnedAt]), ...(s.remoteUnpins ?? []).map(([r, at]): [string, number] => [key(r), at])]),
  };
}

describe('planPinSync', () => {
  test('agreeing sides: nothing to do', () => {
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 10)], remote: [pin('v1', 10)] })), []);
    assert.deepEqual(planPinSync(sides({ localUnpins: [['v1', 20]], remoteUnpins: [['v1', 20]] })), []);
  });

  test('a pin only here goes to Redis; a pin only in Redis comes here', () => {
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 10)] })), [{ do: 'pin-there', pin: pin('v1', 10) }]);
    assert.deepEqual(planPinSync(sides({ remote: [pin('v2', 10)] })), [{ do: 'pin-here', pin: pin('v2', 10) }]);
  });

  test('the later pin of the same reference wins, on either side', () => {
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 30)], remote: [pin('v1', 10)] })), [{ do: 'pin-there', pin: pin('v1', 30) }]);
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 10)], remote: [pin('v1', 30)] })), [{ do: 'pin-here', pin: pin('v1', 30) }]);
  });

  test('a release made elsewhere after this node pinned releases it here', () => {
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 10)], remoteUnpins: [['v1', 20]] })), [{ do: 'unpin-here', pin: pin('v1', 10), at: 20 }]);
  });

  test('a release made here (Redis down meanwhile) removes the pin from Redis; a pin made later anywhere survives an older release', () => {
    assert.deepEqual(planPinSync(sides({ localUnpins: [['v1', 20]], remote: [pin('v1', 10)] })), [{ do: 'unpin-there', key: key('v1'), at: 20 }]);
    assert.deepEqual(planPinSync(sides({ localUnpins: [['v1', 20]], remote: [pin('v1', 30)] })), [{ do: 'pin-here', pin: pin('v1', 30) }]);
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 30)], localUnpins: [['v1', 20]], remoteUnpins: [['v1', 25]] })), [{ do: 'pin-there', pin: pin('v1', 30) }]);
  });

  test('a release here that Redis never heard of is told to it (other nodes may hold the pin)', () => {
    assert.deepEqual(planPinSync(sides({ localUnpins: [['v1', 20]] })), [{ do: 'unpin-there', key: key('v1'), at: 20 }]);
  });

  test('a pin and a release in the same millisecond: the release wins', () => {
    assert.deepEqual(planPinSync(sides({ local: [pin('v1', 20)], remoteUnpins: [['v1', 20]] })), [{ do: 'unpin-here', pin: pin('v1', 20), at: 20 }]);
  });
});

describe('parsePins', () => {
  test('keeps well-formed records under their own key; drops the rest', () => {
    const good = pin('v1', 5);
    const parsed = parsePins({
      [key('v1')]: JSON.stringify(good),
      [key('v2')]: JSON.stringify(good), // under another reference's key
      [key('v3')]: '{not json',
      [key('v4')]: JSON.stringify({ ...pin('v4', 1), digests: ['nope'] }),
    });
    assert.deepEqual([...parsed], [[key('v1'), good]]);
  });
});
