import type { Digest } from '../oci/digest.ts';
import type { RecencyIndex } from '../store/s3-budget.ts';
import type { Coordinator } from './coordinator.ts';

/** Count an object's size once, however many nodes report it. */
const ADD = `if redis.call('hsetnx', KEYS[2], ARGV[1], ARGV[2]) == 1 then redis.call('incrby', KEYS[3], ARGV[2]) end
redis.call('zadd', KEYS[1], 'GT', ARGV[3], ARGV[1])
return 1`;
const REMOVE = `local s = redis.call('hget', KEYS[2], ARGV[1])
if s then redis.call('hdel', KEYS[2], ARGV[1]); redis.call('decrby', KEYS[3], s) end
redis.call('zrem', KEYS[1], ARGV[1])
return 1`;

/**
 * The shared tier's recency in Redis (see RecencyIndex): `<scope>:lru` (sorted set: digest by
 * last access), `<scope>:sizes` (hash), `<scope>:bytes` (their sum), `<scope>:built` (set once a
 * listing filled it), `<scope>:sweep` (the sweep lease). `scope` names the bucket and prefix, so
 * two tiers never mix.
 */
export function redisRecencyIndex(coordinator: Coordinator, scope: string, nodeId: string): RecencyIndex {
  const k = (name: string): string => `gantry:s3:${scope}:${name}`;
  const keys = [k('lru'), k('sizes'), k('bytes')];
  const redis = () => {
    const c = coordinator.client();
    if (!c) throw new Error('redis is down');
    return c;
  };
  return {
    get available() {
      return coordinator.connected;
    },
    async add(digest, size, at) {
      await redis().eval(ADD, 3, ...keys, digest, String(size), String(at));
    },
    async touch(digest, at) {
      // Recorded even before the object is indexed: the read that follows an upload can reach
      // Redis before the uploader's add does, and a lost touch made an object in use look least
      // recently used. Members never indexed (blobs not in the tier) carry no size; a sweep drops
      // them from the index without deleting anything.
      await redis().zadd(k('lru'), 'GT', at, digest);
    },
    async oldest(n, skip = 0) {
      const members = await redis().zrange(k('lru'), skip, skip + n - 1);
      if (members.length === 0) return [];
      const sizes = await redis().hmget(k('sizes'), ...members);
      return members.map((digest, i) => ({ digest: digest as Digest, size: sizes[i] == null ? undefined : Number(sizes[i]) }));
    },
    async remove(digest) {
      await redis().eval(REMOVE, 3, ...keys, digest);
    },
    async totalBytes() {
      return Number((await redis().get(k('bytes'))) ?? 0);
    },
    async built() {
      return (await redis().exists(k('built'))) === 1;
    },
    async markBuilt() {
      await redis().set(k('built'), '1');
    },
    async takeSweep(ttlMs) {
      const key = k('sweep');
      if ((await redis().set(key, nodeId, 'PX', ttlMs, 'NX')) === 'OK') return true;
      // Still ours from the last round: keep it.
      if ((await redis().get(key)) !== nodeId) return false;
      await redis().pexpire(key, ttlMs);
      return true;
    },
  };
}
