import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Kind = 'blob' | 'manifest' | 'tags' | 'referrers';

/** Every Gantry metric, created against one registry per instance (no globals, so tests can run many). */
export function createMetrics(registry = new Registry()) {
  collectDefaultMetrics({ register: registry, prefix: 'gantry_' });
  const m = {
    registry,
    requests: new Counter({
      name: 'gantry_requests_total',
      help: 'Pull API requests by kind, method, cache result and status',
      labelNames: ['kind', 'method', 'result', 'status'] as const,
      registers: [registry],
    }),
    servedBytes: new Counter({
      name: 'gantry_served_bytes_total',
      help: 'Body bytes sent to clients, by kind and source (cache = hit, coalesced/miss = streamed from a fill)',
      labelNames: ['kind', 'source'] as const,
      registers: [registry],
    }),
    upstreamBytes: new Counter({
      name: 'gantry_upstream_bytes_total',
      help: 'Body bytes received from upstreams',
      labelNames: ['kind', 'upstream'] as const,
      registers: [registry],
    }),
    upstreamRequests: new Counter({
      name: 'gantry_upstream_requests_total',
      help: 'Requests sent upstream by method and status (0 = network error)',
      labelNames: ['upstream', 'method', 'status'] as const,
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'gantry_upstream_request_duration_seconds',
      help: 'Time to upstream response headers',
      labelNames: ['upstream', 'method'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'gantry_http_request_duration_seconds',
      help: 'Time to response headers for pull API requests',
      labelNames: ['kind', 'result'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    inflightFills: new Gauge({ name: 'gantry_inflight_fills', help: 'Blob fills in progress', registers: [registry] }),
    inflightWaiters: new Gauge({
      name: 'gantry_inflight_waiters',
      help: 'Client responses currently streaming from an in-progress fill',
      registers: [registry],
    }),
    fills: new Counter({
      name: 'gantry_fills_total',
      help: 'Completed blob fills by outcome (committed, digest_mismatch, size_mismatch, upstream_error, timeout)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    cacheBytes: new Gauge({ name: 'gantry_cache_bytes', help: 'Bytes of blobs and manifests in the cache', registers: [registry] }),
    cacheEntries: new Gauge({ name: 'gantry_cache_entries', help: 'Blobs and manifests in the cache', registers: [registry] }),
    cacheMaxBytes: new Gauge({ name: 'gantry_cache_max_bytes', help: 'Configured cache size budget (0 = unbounded)', registers: [registry] }),
    upstreamUp: new Gauge({
      name: 'gantry_upstream_up',
      help: '1 while the upstream circuit is closed, 0 while it is open or half-open (upstream marked down, probed)',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    upstreamTransitions: new Counter({
      name: 'gantry_upstream_transitions_total',
      help: 'Circuit breaker state changes per upstream, by the state entered (open, half-open, closed)',
      labelNames: ['upstream', 'to'] as const,
      registers: [registry],
    }),
    upstreamProbes: new Counter({
      name: 'gantry_upstream_probes_total',
      help: 'GET /v2/ probes of an upstream marked down, by result (up, down)',
      labelNames: ['upstream', 'result'] as const,
      registers: [registry],
    }),
    ratelimitLimit: new Gauge({
      name: 'gantry_upstream_ratelimit_limit',
      help: 'Last ratelimit-limit header seen from the upstream (Docker Hub pull limit)',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    ratelimitRemaining: new Gauge({
      name: 'gantry_upstream_ratelimit_remaining',
      help: 'Last ratelimit-remaining header seen from the upstream',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    accessChecks: new Counter({
      name: 'gantry_access_checks_total',
      help: 'Upstream checks of whether a credential may see restricted cached content, by result (allowed, denied, unavailable, memo)',
      labelNames: ['upstream', 'result'] as const,
      registers: [registry],
    }),
    fillResumes: new Counter({ name: 'gantry_fill_resumes_total', help: 'Cut blob downloads resumed with a Range request', registers: [registry] }),
    cacheWriteErrors: new Counter({
      name: 'gantry_cache_write_errors_total',
      help: 'Failures to write to the cache (disk full, I/O errors); misses are streamed without caching for a while after one',
      registers: [registry],
    }),
    cacheBypass: new Gauge({ name: 'gantry_cache_bypass', help: '1 while misses are streamed without caching after a write error', registers: [registry] }),
    upstreamRateLimit: new Gauge({
      name: 'gantry_upstream_max_bytes_per_second',
      help: 'Configured bandwidth limit for upstream blob bodies, by limit (global, or an upstream host)',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    upstreamThrottled: new Counter({
      name: 'gantry_upstream_throttled_seconds_total',
      help: 'Time transfers waited for upstream bandwidth, by limit and priority (client fills, background prefetch)',
      labelNames: ['limit', 'priority'] as const,
      registers: [registry],
    }),
    pinnedBytes: new Gauge({ name: 'gantry_pinned_bytes', help: 'Bytes of cached content that a pin keeps out of eviction', registers: [registry] }),
    pinnedImages: new Gauge({ name: 'gantry_pinned_images', help: 'Pinned images (references kept out of eviction)', registers: [registry] }),
    prefetchImages: new Counter({
      name: 'gantry_prefetch_images_total',
      help: 'Images of prefetch jobs that ended, by outcome (done, failed, interrupted by a shutdown)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    prefetchQueuedJobs: new Gauge({ name: 'gantry_prefetch_queued_jobs', help: 'Prefetch jobs queued or running', registers: [registry] }),
    evictions: new Counter({ name: 'gantry_evictions_total', help: 'Cache entries evicted', registers: [registry] }),
    evictedBytes: new Counter({ name: 'gantry_evicted_bytes_total', help: 'Bytes evicted', registers: [registry] }),
    sharedRequests: new Counter({
      name: 'gantry_shared_tier_requests_total',
      help: 'Shared tier (S3) operations by result: open hit/miss/error, upload done/aborted/dropped/error/leftover_aborted (another node\'s unfinished upload of a completed object), put done/error',
      labelNames: ['op', 'result'] as const,
      registers: [registry],
    }),
    sharedBytes: new Counter({
      name: 'gantry_shared_tier_bytes_total',
      help: 'Bytes read from (read) and published to (written) the shared tier',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    nodeInfo: new Gauge({ name: 'gantry_node_info', help: "Always 1; its label is this node's name among the nodes sharing a cache (cluster.nodeId)", labelNames: ['node'] as const, registers: [registry] }),
    redisUp: new Gauge({ name: 'gantry_redis_up', help: '1 while the Redis the nodes coordinate through answers; 0 = this node works alone', registers: [registry] }),
    leases: new Counter({
      name: 'gantry_fill_leases_total',
      help: 'Cluster fill leases: taken (this node downloads), peer (another node does; streamed from it), taken_over (a holder died; this node resumed its download)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    peerBytes: new Counter({
      name: 'gantry_peer_bytes_total',
      help: 'Blob bytes streamed between nodes: received (from a filling node) and sent (to other nodes)',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    sharedTierBytes: new Gauge({ name: 'gantry_shared_tier_bytes', help: 'Bytes in the shared tier, as its last budget sweep counted them', registers: [registry] }),
    sharedEvictions: new Counter({ name: 'gantry_shared_tier_evictions_total', help: 'Objects deleted from the shared tier by its budget (by this node)', registers: [registry] }),
    sharedEvictedBytes: new Counter({ name: 'gantry_shared_tier_evicted_bytes_total', help: 'Bytes deleted from the shared tier by its budget (by this node)', registers: [registry] }),
    sharedUp: new Gauge({ name: 'gantry_shared_tier_up', help: '1 while the shared tier (S3) answers, 0 while it is skipped after an error', registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
