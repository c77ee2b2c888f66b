export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * A per-upstream circuit breaker: after `threshold` consecutive failures
 * (network errors, 5xx) the upstream is considered down for `cooldownMs`, and
 * requests fail at once instead of waiting on it, so cached content is served
 * without delay. After the cooldown one trial request is let through
 * (half-open); its outcome closes or re-opens the circuit.
 */
export class CircuitBreaker {
  state: BreakerState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private trialInFlight = false;
  private readonly threshold: number;
  private readonly cooldownMs: number;
  private readonly onChange: (state: BreakerState) => void;
  private readonly now: () => number;

  constructor(opts: { threshold: number; cooldownMs: number; onChange?: (s: BreakerState) => void; now?: () => number }) {
    this.threshold = opts.threshold;
    this.cooldownMs = opts.cooldownMs;
    this.onChange = opts.onChange ?? (() => undefined);
    this.now = opts.now ?? Date.now;
  }

  /** True if a request may be sent now. */
  allow(): boolean {
    if (this.state === 'closed') return true;
    if (this.state === 'open') {
      if (this.now() < this.openUntil) return false;
      this.set('half-open');
    }
    if (this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  success(): void {
    this.failures = 0;
    this.trialInFlight = false;
    if (this.state !== 'closed') this.set('closed');
  }

  failure(): void {
    this.trialInFlight = false;
    this.failures += 1;
    if (this.state === 'half-open' || (this.state === 'closed' && this.failures >= this.threshold)) {
      this.openUntil = this.now() + this.cooldownMs;
      this.set('open');
    }
  }

  /** Milliseconds until a trial request is allowed (0 when closed). */
  retryAfterMs(): number {
    return this.state === 'open' ? Math.max(0, this.openUntil - this.now()) : 0;
  }

  private set(state: BreakerState): void {
    this.state = state;
    this.onChange(state);
  }
}
