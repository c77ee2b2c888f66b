import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteRateLimiter, throttled, type TransferPriority } from '../../../src/upstream/rate-limiter.ts';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 }));
afterEach(() => mock.timers.reset());

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function limiter(bytesPerSecond: number, waits: Array<[TransferPriority, number]> = []): ByteRateLimiter {
  return new ByteRateLimiter(bytesPerSecond, { now: () => Date.now(), onWait: (p, ms) => waits.push([p, ms]) });
}

describe('ByteRateLimiter', () => {
  test('a burst goes at once, then bytes come at the rate', async () => {
    const waits: Array<[TransferPriority, number]> = [];
    const l = limiter(100_000, waits); // burst: 64 KiB (a tenth of a second is less)
    let done = false;
    await l.take(65_536);
    void l.take(50_000).then(() => (done = true));
    mock.timers.tick(480);
    await flush();
    assert.equal(done, false, '50 kB at 100 kB/s takes half a second');
    mock.timers.tick(30);
    await flush();
    assert.equal(done, true);
    assert.equal(waits.length, 1);
    assert.ok((waits[0]?.[1] ?? 0) >= 500);
  });

  test('client transfers go first; background ones get only what clients leave', async () => {
    const l = limiter(100_000);
    await l.take(65_536);
    const order: string[] = [];
    void l.take(10_000, 'background').then(() => order.push('background'));
    void l.take(10_000, 'client').then(() => order.push('client 1'));
    void l.take(10_000, 'client').then(() => order.push('client 2'));
    assert.equal(l.waiting('background'), 1);
    for (let i = 0; i < 40 && order.length < 3; i++) {
      mock.timers.tick(10);
      await flush();
    }
    assert.deepEqual(order, ['client 1', 'client 2', 'background']);
  });

  test('a chunk larger than the burst still passes, and the average rate holds', async () => {
    const l = limiter(100_000);
    const started = Date.now();
    let total = 0;
    for (let i = 0; i < 3; i++) {
      const p = l.take(200_000);
      for (let t = 0; t < 1_000; t++) {
        let settled = false;
        void p.then(() => (settled = true));
        await flush();
        if (settled) break;
        mock.timers.tick(10);
      }
      await p;
      total += 200_000;
    }
    const seconds = (Date.now() - started) / 1000;
    // Over any window, at most rate x time plus one chunk (the first went on the burst).
    assert.ok(seconds >= (total - 200_000) / 100_000 - 0.01, `${total} bytes in ${seconds} s`);
  });

  test('throttled() hands every chunk on unchanged, asking the priority per chunk', async () => {
    const l = limiter(1_000_000);
    const chunks = [Buffer.from('a'), Buffer.from('bc'), Buffer.from('def')];
    async function* source(): AsyncGenerator<Uint8Array> {
      yield* chunks;
    }
    let asked = 0;
    const out: Uint8Array[] = [];
    for await (const c of throttled(source(), [l], () => (asked++, 'client'))) out.push(c);
    assert.deepEqual(out, chunks);
    assert.equal(asked, 3);
  });
});
