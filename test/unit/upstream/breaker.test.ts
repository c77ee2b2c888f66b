import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker, isOutageStatus, type BreakerOptions, type BreakerTransition } from '../../../src/upstream/breaker.ts';

// Fake time: setTimeout and Date.now advance only with mock.timers.tick().
beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

/** Let promise callbacks (a probe settling) run between ticks. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function breaker(opts: Partial<BreakerOptions> = {}): { b: CircuitBreaker; changes: BreakerTransition[] } {
  const changes: BreakerTransition[] = [];
  const b = new CircuitBreaker({
    threshold: 2,
    cooldownMs: 30_000,
    trialTimeoutMs: 5_000,
    probeIntervalMs: 0,
    onChange: (t) => changes.push(t),
    ...opts,
  });
  return { b, changes };
}

describe('CircuitBreaker', () => {
  test('opens after the threshold of consecutive failures; a success in between resets the count', () => {
    const { b, changes } = breaker();
    b.failure();
    b.success();
    b.failure();
    assert.equal(b.state, 'closed');
    b.failure();
    assert.equal(b.state, 'open');
    assert.equal(b.allow(), false);
    assert.deepEqual(changes, [{ from: 'closed', to: 'open', reason: 'failures' }]);
  });

  test('without probes: one trial after the cooldown; its success closes and reports the downtime', () => {
    const { b, changes } = breaker();
    b.failure();
    b.failure();
    mock.timers.tick(29_999);
    assert.equal(b.allow(), false);
    assert.equal(b.retryAfterMs(), 1);
    mock.timers.tick(1);
    assert.equal(b.allow(), true, 'the trial');
    assert.equal(b.state, 'half-open');
    assert.equal(b.allow(), false, 'only one trial at a time');
    mock.timers.tick(100);
    b.success();
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes.at(-1), { from: 'half-open', to: 'closed', reason: 'success', downForMs: 30_100 });
  });

  test('a failed trial opens the circuit for another cooldown', () => {
    const { b, changes } = breaker();
    b.failure();
    b.failure();
    mock.timers.tick(30_000);
    assert.equal(b.allow(), true);
    b.failure();
    assert.equal(b.state, 'open');
    assert.equal(changes.at(-1)?.reason, 'trial_failed');
    mock.timers.tick(29_000);
    assert.equal(b.allow(), false);
  });

  test('a trial that never completes cannot wedge the breaker: past its deadline the circuit opens again and a new trial follows', () => {
    const { b, changes } = breaker();
    b.failure();
    b.failure();
    mock.timers.tick(30_000);
    assert.equal(b.allow(), true, 'trial let through, and it never reports back');
    mock.timers.tick(4_999);
    assert.equal(b.allow(), false, 'still within the trial deadline');
    assert.equal(b.state, 'half-open');
    mock.timers.tick(1);
    assert.equal(b.allow(), false);
    assert.equal(b.state, 'open', 'the stuck trial counts as failed');
    assert.equal(changes.at(-1)?.reason, 'trial_timeout');
    mock.timers.tick(30_000);
    assert.equal(b.allow(), true, 'a new trial after the next cooldown');
  });

  test('while open, probes run every interval and the first good answer closes the circuit', async () => {
    let up = false;
    const probes: number[] = [];
    const { b, changes } = breaker({
      probeIntervalMs: 1_000,
      probe: async () => {
        probes.push(Date.now());
        return up;
      },
    });
    b.failure();
    b.failure();
    await flush();
    assert.equal(probes.length, 0, 'the failures that opened it are fresh news: the first probe waits one interval');
    for (let i = 0; i < 4; i++) {
      mock.timers.tick(1_000);
      await flush();
    }
    assert.equal(probes.length, 4);
    assert.equal(b.state, 'open');
    assert.ok(b.retryAfterMs() <= 1_000, 'Retry-After follows the probe schedule, not the 30 s cooldown');
    up = true;
    mock.timers.tick(1_000);
    await flush();
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes.at(-1), { from: 'open', to: 'closed', reason: 'probe', downForMs: 5_000 });
    mock.timers.tick(10_000);
    await flush();
    assert.equal(probes.length, 5, 'no probes while closed');
  });

  test('a probe that never settles is abandoned at its deadline and later probes still run', async () => {
    let calls = 0;
    const signals: AbortSignal[] = [];
    const { b } = breaker({
      probeIntervalMs: 1_000,
      trialTimeoutMs: 3_500,
      probe: (signal) => {
        calls += 1;
        signals.push(signal);
        // The first three hang forever, ignoring their signal; then the upstream answers.
        return calls <= 3 ? new Promise<boolean>(() => undefined) : Promise.resolve(true);
      },
    });
    b.failure();
    b.failure();
    for (let i = 0; i < 3; i++) mock.timers.tick(1_000);
    await flush();
    assert.equal(calls, 3);
    mock.timers.tick(1_000);
    await flush();
    assert.equal(calls, 3, 'at most three probes in flight');
    assert.equal(signals[0]?.aborted, false);
    mock.timers.tick(1_000);
    await flush();
    assert.equal(signals[0]?.aborted, true, 'the first passed its 3.5 s deadline and was aborted');
    assert.equal(calls, 4);
    assert.equal(b.state, 'closed');
  });

  test('an upstream that answers probes but fails requests is probed less often, up to the cooldown', async () => {
    const probes: number[] = [];
    const { b } = breaker({
      threshold: 1,
      cooldownMs: 8_000,
      probeIntervalMs: 1_000,
      probe: async () => {
        probes.push(Date.now());
        return true;
      },
    });
    const gaps: number[] = [];
    for (let round = 0; round < 5; round++) {
      b.failure(); // a real request fails right after each probe closed the circuit
      const before = probes.length;
      let waited = 0;
      while (probes.length === before && waited < 20_000) {
        mock.timers.tick(100);
        waited += 100;
        await flush();
      }
      gaps.push(waited);
      assert.equal(b.state, 'closed');
    }
    assert.deepEqual(gaps, [1_000, 2_000, 4_000, 8_000, 8_000], 'doubling, capped at the cooldown');
  });

  test('stop() ends probing', async () => {
    let calls = 0;
    const { b } = breaker({ probeIntervalMs: 1_000, probe: async () => (calls++, false) });
    b.failure();
    b.failure();
    mock.timers.tick(1_000);
    await flush();
    b.stop();
    mock.timers.tick(5_000);
    await flush();
    assert.equal(calls, 1);
  });

  test('only outage statuses count against an upstream: 502, 503, 504, not 500 or 4xx', () => {
    assert.deepEqual([400, 404, 429, 500, 501, 502, 503, 504, 505].filter(isOutageStatus), [502, 503, 504]);
  });
});
