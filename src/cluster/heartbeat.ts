import type { Redis } from 'ioredis';
import type { Coordinator } from './coordinator.ts';

/**
 * A node's heartbeat lives this long unless renewed: a node killed is seen gone within it. Three
 * renewals fit in it, so one slow Redis round does not make a live node look dead.
 */
export const HEARTBEAT_TTL_MS = 15_000;
const BEAT_EVERY_MS = 5_000;

/** The key that says `node` is alive while it exists. */
export function heartbeatKey(node: string): string {
  return `gantry:node:${node}`;
}

/**
 * This node's presence for the others (`gantry:node:<id>`, renewed every 5 s while it serves), so
 * work it owns (prefetch jobs) can be taken over once it is gone. While Redis is down nothing is
 * renewed; the key returns with the next beat once Redis answers.
 */
export class NodeHeartbeat {
  private readonly coordinator: Coordinator;
  private readonly node: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(coordinator: Coordinator, node: string) {
    this.coordinator = coordinator;
    this.node = node;
  }

  start(): void {
    if (this.timer) return;
    void this.beat();
    this.timer = setInterval(() => void this.beat(), BEAT_EVERY_MS);
    this.timer.unref();
  }

  /** Stop renewing; the key expires by itself, so a node back within the TTL keeps its work. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private beat(): Promise<boolean> {
    return this.coordinator.command(false, async (r) => (await r.set(heartbeatKey(this.node), new Date().toISOString(), 'PX', HEARTBEAT_TTL_MS)) === 'OK');
  }
}

/** Which of `nodes` have a heartbeat now (one round trip); throws when Redis cannot say. */
export async function aliveNodes(redis: Redis, nodes: readonly string[]): Promise<Set<string>> {
  if (nodes.length === 0) return new Set();
  const values = await redis.mget(...nodes.map(heartbeatKey));
  return new Set(nodes.filter((_, i) => values[i] != null));
}
