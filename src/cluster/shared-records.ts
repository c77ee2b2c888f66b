/**
 * Small records the nodes sharing a cache keep for each other, with a lifetime (Redis through
 * cluster/coordinator.ts): tag records, access-check answers, tokens. Best effort by contract:
 * `get` says "none" and `put` says false when the store cannot be reached, and the node then
 * decides alone, as a single node does.
 */
export type SharedRecords = {
  get(name: string): Promise<string | undefined>;
  put(name: string, value: string, ttlMs: number): Promise<boolean>;
};
