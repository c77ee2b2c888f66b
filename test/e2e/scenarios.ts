// The pull scenario every engine runs, written once (verdaccio's e2e-*-commons pattern): a first
// round through a cold Gantry (each object goes upstream exactly once), a second round after the
// engine forgot everything (nothing goes upstream, the engine still downloads every blob from
// Gantry), and a pull with the origin unreachable (a tag pulled before, within its TTL, still
// pulls). An engine file supplies how its engine starts, pulls and checks what it got, plus the
// cases only that engine has.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ForwardedRequest } from '../helpers/counting-forwarder.ts';
import { assertFetchedOnce, assertNothingFetched, describeTap, pulledBlobs, startE2eEnv, type E2eEnv, type Pulled } from './harness.ts';
import { requireE2eHost } from './host.ts';

export type PullEngine = {
  /** What one round pulls, in order. */
  pulls: Pulled[];
  /** One round: pull everything in `pulls`, asserting what the engine ended up with. */
  pullAll(): Promise<void>;
  /** Make the engine forget every image before the second round (what `ScenarioOptions.forgetting` says); absent when each round starts from nothing. */
  forget?(): Promise<void>;
  /** What the engine sends to Gantry, asserted on the first round. */
  wire: {
    /** 'plain': an http:// mirror is spoken to in plain HTTP; 'tls-first': a TLS ClientHello first (`insecure = true`), then plain HTTP. */
    transport: 'plain' | 'tls-first';
    /** It pings /v2/ (asserted when true). */
    pingsV2: boolean;
    /** It adds ?ns=<registry> (when false, asserted never; when true, checkFirstRound says which). */
    sendsNs: boolean;
  };
  /** The first round's assertions that only hold for this engine. `upstream`: what Gantry sent upstream during the round. */
  checkFirstRound(t: TestContext, upstream: ForwardedRequest[]): void;
  /** Remove the OCI test image where the engine keeps it (the origin is still up). */
  forgetOci?(): Promise<void>;
  /** Pull the OCI test image again, asserting what the engine got: run with the origin unreachable. */
  pullOci(): Promise<void>;
  stop(): Promise<void>;
};

export type ScenarioOptions<E extends PullEngine> = {
  /** Names the engine in test names, messages and its temp dir: 'dockerd', 'skopeo'... */
  name: string;
  /** What the engine does with an image: 'pull' (the engines) or 'copy' (skopeo, to a new directory each time). */
  verb: 'pull' | 'copy';
  /** What `forget()` does, for the second round's name: 'removing the images'. */
  forgetting?: string;
  /** Binaries the engine needs (the origin registry is always checked). */
  requires: string[];
  start(env: E2eEnv): Promise<E>;
};

/** The environment and the engine of a running scenario, for the engine file's own tests. */
export type PullScenarios<E extends PullEngine> = { env(): E2eEnv; engine(): E };

/** The discard port: connection refused. */
const UNREACHABLE = 'http://127.0.0.1:9';

/**
 * Register, in the enclosing describe(), the start of an e2e environment and of the engine
 * (`start`, on a host that has `requires`), the three scenario tests, and the teardown.
 */
export function runPullScenarios<E extends PullEngine>(opts: ScenarioOptions<E>): PullScenarios<E> {
  const { name, verb } = opts;
  let env: E2eEnv | undefined;
  let engine: E | undefined;
  const current = { env: () => defined(env, 'e2e environment'), engine: () => defined(engine, 'engine') };

  before(async () => {
    requireE2eHost(...opts.requires);
    env = await startE2eEnv(name);
    engine = await opts.start(env);
  });

  after(async () => {
    try {
      await engine?.stop();
    } finally {
      await env?.stop();
    }
  });

  test(`first ${verb}: every image comes through Gantry, each object fetched upstream once`, async (t) => {
    const { env, engine } = { env: current.env(), engine: current.engine() };
    env.tap.reset();
    const since = env.fwd.requests.length;
    await engine.pullAll();
    const upstream = env.fwd.requests.slice(since);
    assertFetchedOnce(upstream, engine.pulls);

    t.diagnostic(`${name} → Gantry:\n${describeTap(env.tap.requests)}`);
    assertWire(name, env, engine);
    engine.checkFirstRound(t, upstream);
    assertClientFetchedBlobs(name, env, engine);
  });

  test(`second ${verb}${opts.forgetting !== undefined ? ` after ${opts.forgetting}` : ''}: nothing is downloaded upstream`, async (t) => {
    const { env, engine } = { env: current.env(), engine: current.engine() };
    await engine.forget?.();
    env.tap.reset();
    const since = env.fwd.requests.length;
    await engine.pullAll();
    const upstream = env.fwd.requests.slice(since);
    t.diagnostic(`upstream during the second ${verb}:\n${upstream.map((r) => `${r.method} ${r.path}`).join('\n') || '(nothing)'}`);
    assertNothingFetched(upstream);
    assertClientFetchedBlobs(name, env, engine);
  });

  test(`with the origin unreachable, a tag ${verb === 'copy' ? 'copied' : 'pulled'} before (within its TTL) still ${verb === 'copy' ? 'copies' : 'pulls'}`, async () => {
    const { env, engine } = { env: current.env(), engine: current.engine() };
    await engine.forgetOci?.();
    env.fwd.setTarget(UNREACHABLE);
    try {
      await engine.pullOci();
    } finally {
      env.fwd.setTarget(env.origin.url);
    }
  });

  return current;
}

function defined<T>(value: T | undefined, what: string): T {
  assert.ok(value !== undefined, `${what} not started (see the before() failure)`);
  return value;
}

function assertWire(name: string, env: E2eEnv, engine: PullEngine): void {
  const { transport, pingsV2, sendsNs } = engine.wire;
  if (transport === 'plain') assert.equal(env.tap.tlsProbes(), 0, `${name}: an http:// mirror is spoken to in plain HTTP`);
  else assert.ok(env.tap.tlsProbes() >= 1, `${name} sent a TLS ClientHello first (insecure = true: then plain HTTP)`);
  if (pingsV2) assert.ok(env.tap.http({ method: 'GET', targetIncludes: /^\/v2\/$/ }).length >= 1, `${name} pings /v2/`);
  if (!sendsNs) assert.equal(env.tap.http({ targetIncludes: 'ns=' }).length, 0, `${name} does not send ?ns=`);
}

/** Every blob of every pull was downloaded by the engine from Gantry since the tap was reset. */
function assertClientFetchedBlobs(name: string, env: E2eEnv, engine: PullEngine): void {
  for (const d of new Set(engine.pulls.flatMap((p) => pulledBlobs(p)))) {
    assert.ok(env.tap.http({ method: 'GET', targetIncludes: `/blobs/${d}` }).length >= 1, `${name} downloaded ${d} from Gantry`);
  }
}
