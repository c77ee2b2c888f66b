export type BreakerState = 'closed' | 'open' | 'half-open';

/** Why the circuit changed state; the log line and the transitions counter carry it. */
export type BreakerReason = 'failures' | 'trial_failed' | 'trial_timeout' | 'cooldown' | 'probe' | 'success';

export type BreakerTransition = {
  from: BreakerState;
  to: BreakerState;
  reason: BreakerReason;
  /** On the way back to closed: how long the upstream was not closed. */
  downForMs?: number;
};

export type BreakerOptions = {
  /** Consecutive failures (network errors, outage statuses) that open the circuit. */
  threshold: number;
  /** How long an open circuit waits before letting one request through as a trial. */
  cooldownMs: number;
  /** Deadline of that trial and of each probe: one that never settles must not wedge the breaker. */
  trialTimeoutMs: number;
  /** While open, probe the upstream this often (0: no probes, only the cooldown trial). */
  probeIntervalMs: number;
  /** One cheap request to the upstream: true when it answered at all (below 500). */
  probe?: (signal: AbortSignal) => Promise<boolean>;
  onChange?: (t: BreakerTransition) => void;
  now?: () => number;
};

/**
 * Upstream answers that say "down" rather than "this request failed": a gateway or load
 * balancer without a backend, an overloaded registry, a timeout. A 500 is not among them: a
 * healthy registry answers 500 to some requests (distribution does for a manifest fetched by
 * a blob's digest), and counting those would let any client open the circuit for everyone.
 */
export function isOutageStatus(status: number): boolean {
  return status === 502 || status === 503 || status === 504;
}

/** Probes overlap only when a probe is slower than the interval (a black-holed link); never more than this. */
const MAX_PROBES_IN_FLIGHT = 3;

/**
 * A per-upstream circuit breaker. After `threshold` consecutive failures the
 * upstream is considered down: requests fail at once instead of waiting on it,
 * so cached content is served without delay. Two ways lead back:
 *  - while open, the breaker probes the upstream every `probeIntervalMs` and
 *    closes on the first answer, so a returning upstream is used within about
 *    one interval whether or not clients are asking;
 *  - after `cooldownMs`, one client request is let through as a trial
 *    (half-open), under its own deadline.
 * A probe that closes the circuit only for it to open again at once (the
 * upstream answers `/v2/` but fails real requests) doubles the probe interval,
 * up to the cooldown, so a half-broken upstream does not flap every second.
 */
export class CircuitBreaker {
  state: BreakerState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private trialDeadline: number | undefined;
  private downSince = 0;
  private closedByProbeAt: number | undefined;
  private probeEveryMs: number;
  private probeTimer: NodeJS.Timeout | undefined;
  private nextProbeAt = 0;
  private probesInFlight = 0;
  private stopped = false;
  private readonly opts: Required<Omit<BreakerOptions, 'probe'>> & Pick<BreakerOptions, 'probe'>;

  constructor(opts: BreakerOptions) {
    this.opts = { onChange: () => undefined, now: Date.now, ...opts };
    this.probeEveryMs = opts.probeIntervalMs;
  }

  /** True if a request may be sent now. */
  allow(): boolean {
    if (this.state === 'closed') return true;
    const now = this.opts.now();
    if (this.state === 'half-open') {
      if (this.trialDeadline !== undefined && now >= this.trialDeadline) this.open('trial_timeout');
      return false;
    }
    if (now < this.openUntil) return false;
    this.trialDeadline = now + this.opts.trialTimeoutMs;
    this.set('half-open', 'cooldown');
    return true;
  }

  success(): void {
    this.failures = 0;
    if (this.state !== 'closed') this.close('success');
  }

  failure(): void {
    this.failures += 1;
    if (this.state === 'half-open') this.open('trial_failed');
    else if (this.state === 'closed' && this.failures >= this.opts.threshold) this.open('failures');
  }

  /** How long a client should wait before asking again: until the next probe, else the trial. 0 when closed. */
  retryAfterMs(): number {
    if (this.state === 'closed') return 0;
    const now = this.opts.now();
    const until = this.probing() ? this.nextProbeAt : this.openUntil;
    return Math.max(0, until - now);
  }

  /** Stop probing for good (the upstream client is closing). */
  stop(): void {
    this.stopped = true;
    this.clearProbeTimer();
  }

  private open(reason: BreakerReason): void {
    const now = this.opts.now();
    if (this.state === 'closed') {
      this.downSince = now;
      // The last probe's "up" did not hold: probe less often (up to the cooldown) until it does.
      const relapsed = this.closedByProbeAt !== undefined && now - this.closedByProbeAt < this.opts.cooldownMs;
      this.probeEveryMs = relapsed ? Math.min(this.probeEveryMs * 2, Math.max(this.opts.cooldownMs, this.opts.probeIntervalMs)) : this.opts.probeIntervalMs;
    }
    this.openUntil = now + this.opts.cooldownMs;
    this.trialDeadline = undefined;
    this.set('open', reason);
    if (this.probing() && this.probeTimer === undefined) this.scheduleProbe(this.probeEveryMs);
  }

  private close(reason: BreakerReason): void {
    const now = this.opts.now();
    this.trialDeadline = undefined;
    this.closedByProbeAt = reason === 'probe' ? now : undefined;
    this.clearProbeTimer();
    this.set('closed', reason, now - this.downSince);
  }

  private set(to: BreakerState, reason: BreakerReason, downForMs?: number): void {
    const from = this.state;
    this.state = to;
    this.opts.onChange(downForMs === undefined ? { from, to, reason } : { from, to, reason, downForMs });
  }

  private probing(): boolean {
    return this.opts.probe !== undefined && this.probeEveryMs > 0 && !this.stopped;
  }

  private scheduleProbe(delayMs: number): void {
    this.nextProbeAt = this.opts.now() + delayMs;
    this.probeTimer = setTimeout(() => this.probeTick(), delayMs);
    this.probeTimer.unref();
  }

  private clearProbeTimer(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private probeTick(): void {
    this.probeTimer = undefined;
    if (this.state === 'closed' || !this.probing()) return;
    if (this.probesInFlight < MAX_PROBES_IN_FLIGHT) this.runProbe();
    this.scheduleProbe(this.probeEveryMs);
  }

  private runProbe(): void {
    const probe = this.opts.probe;
    if (!probe) return;
    const controller = new AbortController();
    let settled = false;
    const settle = (up: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      this.probesInFlight -= 1;
      if (up && this.state !== 'closed' && !this.stopped) this.close('probe');
    };
    // The breaker enforces the deadline itself: a probe that ignores its signal still ends here.
    const deadline = setTimeout(() => {
      controller.abort();
      settle(false);
    }, this.opts.trialTimeoutMs);
    deadline.unref();
    this.probesInFlight += 1;
    probe(controller.signal).then(settle, () => settle(false));
  }
}
