/**
 * The files for several nodes sharing one cache cannot rot silently either:
 * deploy/kubernetes/cluster/, deploy/docker-compose.cluster.yml and deploy/nginx/gantry-lb.conf.
 * None of them can run here (no container images, no Kubernetes), so:
 *  - every GANTRY_* variable they set is one of Gantry's settings (the README's table), and the
 *    environment each node would get, built the way Kubernetes or compose builds it (placeholders
 *    for pod fields, the Secret template's values, compose's defaults), passes Gantry's own config
 *    parser, its cluster rules included (bucket, peer token, advertise URL);
 *  - the pieces point at each other: Redis URL and S3 endpoint at the right service and port, each
 *    node its own id, address and cache, the Secret holding every key the Deployment reads;
 *  - Debian's nginx runs the load balancer's config against three stand-in nodes (requests reach
 *    all three, Host kept, bodies streamed both ways, nothing spooled), and redis-server runs with
 *    the arguments the manifests give Redis. scripts/ensure-system-deps.sh installs both; without
 *    them these tests fail, as deploy.test.ts does without promtool.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { overridableSettings, overridesFromEnv, parseConfig, type Config } from '../../../src/config/config.ts';
import { startGuardedChild } from '../../helpers/guarded-child.ts';
import { listensOn } from '../../helpers/processes.ts';
import { onFreePort, type SupervisedChild } from '../../helpers/supervised-child.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DEPLOY = path.join(ROOT, 'deploy');
const K8S = path.join(DEPLOY, 'kubernetes');
const K8S_CLUSTER = path.join(K8S, 'cluster');
const COMPOSE = path.join(DEPLOY, 'docker-compose.cluster.yml');
const COMPOSE_ONE_NODE = path.join(DEPLOY, 'docker-compose.yml');
const LB_CONF = path.join(DEPLOY, 'nginx/gantry-lb.conf');

/** The variables Gantry reads its settings from: the settings table's, plus GANTRY_CONFIG (the file's path, load-config.ts). */
const GANTRY_VARS = new Set(['GANTRY_CONFIG', ...overridableSettings().flatMap(([, s]) => (s.env === undefined ? [] : [s.env]))]);

function unknownGantryVars(names: Iterable<string>): string[] {
  return [...names].filter((n) => n.startsWith('GANTRY_') && !GANTRY_VARS.has(n)).sort();
}

/** Gantry's config from its environment alone (no --config), as main builds it; a ConfigError lists every problem. */
function configFromEnv(env: Record<string, string>): Config {
  const secrets = { env, readFile: (p: string): string => assert.fail(`no secret file ${p} in these deployments`) };
  return parseConfig(undefined, overridesFromEnv(env), secrets);
}

/** The cluster settings a shared cache needs are all there (parseConfig alone accepts a node without any). */
function assertClustered(cfg: Config, where: string): void {
  assert.ok(cfg.cluster.redis.url, `${where}: no cluster.redis.url`);
  assert.ok(cfg.cluster.peerToken, `${where}: no cluster.peerToken`);
  assert.ok(cfg.cluster.advertiseUrl, `${where}: no cluster.advertiseUrl`);
  assert.ok(cfg.cluster.nodeId, `${where}: no cluster.nodeId (the hostname would do, but these files set it)`);
  assert.ok(cfg.storage.s3.bucket, `${where}: no storage.s3.bucket`);
}

const CHANGE_ME = /CHANGE-ME/;

// ---- Kubernetes --------------------------------------------------------------------------------

type Labels = Record<string, string>;
type K8sDocument = { apiVersion: string; kind: string; metadata: { name: string; labels?: Labels }; [k: string]: unknown };
/** A parsed manifest and the file it came from. */
type K8sObject = K8sDocument & { file: string };
type Probe = { httpGet?: { path: string; port: string | number }; tcpSocket?: { port: string | number } };
type EnvVar = {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    resourceFieldRef?: { containerName?: string; resource: string; divisor?: string };
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
  };
};
type Container = {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  ports: Array<{ name?: string; containerPort: number }>;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown>;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
};
type Volume = { name: string; emptyDir?: { sizeLimit?: string }; persistentVolumeClaim?: unknown; configMap?: unknown };
type PodSpec = {
  enableServiceLinks?: boolean;
  automountServiceAccountToken?: boolean;
  securityContext?: Record<string, unknown>;
  containers: Container[];
  volumes?: Volume[];
};
type Workload = K8sObject & {
  spec: { replicas?: number; selector: { matchLabels: Labels }; template: { metadata: { labels: Labels }; spec: PodSpec }; volumeClaimTemplates?: unknown[] };
};
type Service = K8sObject & { spec: { selector: Labels; ports: Array<{ name?: string; port: number; targetPort: string | number }> } };
type Secret = K8sObject & { stringData?: Record<string, string>; data?: Record<string, string> };
type ConfigMap = K8sObject & { data?: Record<string, string> };

function k8sObjects(dir: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(dir, f), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${f}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const obj = doc.toJS() as K8sDocument | null;
      if (obj) out.push({ ...obj, file: f });
    }
  }
  return out;
}

function theOne<T extends K8sObject>(objs: K8sObject[], kind: string, name?: string): T {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `expected one ${kind}${name === undefined ? '' : ` ${name}`}, found ${found.length}`);
  return found[0] as T;
}

function selects(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** A Kubernetes quantity in bytes (`50Gi`, `500M`, `1024`). */
function quantityBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  assert.ok(m, `not a byte quantity: ${q}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/** A CPU quantity in cores (`2`, `500m`). */
function cpuCores(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(q);
  assert.ok(m, `not a CPU quantity: ${q}`);
  return Number(m[1]) / (m[2] ? 1000 : 1);
}

/** What the fields a pod reads about itself (downward API) stand for in these tests. */
const POD_FIELDS: Record<string, string> = {
  'metadata.name': 'gantry-6d9c7f8b5-x2k7p',
  'metadata.namespace': 'mirror',
  'status.podIP': '10.42.1.17',
};

/**
 * The environment the kubelet would give `c`: envFrom first, then env in order, `$(VAR)` expanded
 * against what is defined before it (unknown references stay as written, as the kubelet leaves them).
 * Secrets and ConfigMaps come from `objs`: a missing one, or a missing key, fails unless optional.
 */
function podEnv(c: Container, objs: K8sObject[]): Record<string, string> {
  const env: Record<string, string> = {};
  const configMap = (name: string): Record<string, string> => theOne<ConfigMap>(objs, 'ConfigMap', name).data ?? {};
  const secret = (name: string): Record<string, string> | undefined => {
    const s = objs.find((o): o is Secret => o.kind === 'Secret' && o.metadata.name === name);
    return s && { ...s.data, ...s.stringData };
  };
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef) Object.assign(env, configMap(from.configMapRef.name));
    if (from.secretRef) Object.assign(env, secret(from.secretRef.name) ?? assert.fail(`Secret ${from.secretRef.name} not found`));
  }
  for (const v of c.env ?? []) {
    const ref = v.valueFrom;
    let value: string | undefined;
    if (v.value !== undefined) value = v.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env[name] ?? all);
    else if (ref?.fieldRef) value = POD_FIELDS[ref.fieldRef.fieldPath] ?? assert.fail(`${v.name}: unexpected fieldRef ${ref.fieldRef.fieldPath}`);
    else if (ref?.resourceFieldRef) {
      const r = ref.resourceFieldRef;
      assert.equal(r.containerName ?? c.name, c.name, `${v.name}: another container's resources`);
      const [kind, resource] = r.resource.split('.') as ['limits' | 'requests', string];
      const q = c.resources?.[kind]?.[resource] ?? assert.fail(`${v.name}: ${r.resource} is not set`);
      // The kubelet rounds up to a whole multiple of the divisor.
      value = String(Math.ceil(cpuCores(q) / cpuCores(r.divisor ?? '1')));
    } else if (ref?.secretKeyRef) {
      const { name, key, optional } = ref.secretKeyRef;
      value = secret(name)?.[key];
      if (value === undefined) assert.ok(optional, `${v.name}: Secret ${name} has no key ${key}, and the reference is not optional`);
    } else if (ref?.configMapKeyRef) {
      const { name, key, optional } = ref.configMapKeyRef;
      value = objs.find((o): o is ConfigMap => o.kind === 'ConfigMap' && o.metadata.name === name)?.data?.[key];
      if (value === undefined) assert.ok(optional, `${v.name}: ConfigMap ${name} has no key ${key}, and the reference is not optional`);
    } else assert.fail(`${v.name}: neither value nor a known valueFrom`);
    if (value !== undefined) env[v.name] = value;
  }
  return env;
}

describe('kubernetes: several nodes (deploy/kubernetes/cluster)', () => {
  const objs = k8sObjects(K8S_CLUSTER);
  const gantry = (): Workload => theOne<Workload>(objs, 'Deployment', 'gantry');
  const gantryContainer = (): Container => gantry().spec.template.spec.containers.find((c) => c.name === 'gantry') ?? assert.fail('no container named gantry');
  const redis = (): Workload => {
    const w = objs.filter((o): o is Workload => (o.kind === 'Deployment' || o.kind === 'StatefulSet') && o.metadata.name !== 'gantry');
    assert.equal(w.length, 1, 'one Redis workload');
    return w[0]!;
  };
  const single = k8sObjects(K8S);
  const statefulSet = (): Workload => theOne<Workload>(single, 'StatefulSet');
  const env = (): Record<string, string> => podEnv(gantryContainer(), objs);

  test('every manifest parses, has apiVersion/kind/name, and kustomization.yaml lists every other file', () => {
    for (const o of objs) {
      assert.ok(o.apiVersion && o.kind, `${o.file}: apiVersion and kind`);
      if (o.kind !== 'Kustomization') assert.ok(o.metadata?.name, `${o.file}: ${o.kind} without metadata.name`);
    }
    const k = theOne<K8sObject & { resources: string[] }>(objs, 'Kustomization');
    const files = readdirSync(K8S_CLUSTER).filter((n) => n !== 'kustomization.yaml').sort();
    assert.deepEqual([...k.resources].sort(), files);
    // The single-node kustomization must not pick these up (kubectl apply -k deploy/kubernetes).
    const parent = theOne<K8sObject & { resources: string[] }>(single, 'Kustomization');
    assert.ok(!parent.resources.some((r) => r.startsWith('cluster')), 'deploy/kubernetes/kustomization.yaml includes cluster/');
  });

  test('a Deployment of 3 Gantry nodes, the same image as the StatefulSet, probes on /readyz and /healthz', () => {
    const d = gantry();
    assert.equal(d.spec.replicas, 3);
    assert.ok(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels), 'the selector matches the pods');
    const c = gantryContainer();
    assert.equal(c.image, statefulSet().spec.template.spec.containers[0]!.image, 'same image as deploy/kubernetes/statefulset.yaml');
    const port = configFromEnv(env()).listen.port;
    const portOf = (p: string | number | undefined): number | undefined => (typeof p === 'number' ? p : c.ports.find((cp) => cp.name === p)?.containerPort);
    assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
    assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
    assert.equal(portOf(c.readinessProbe.httpGet.port), port, 'readiness probe on the port Gantry listens on');
    assert.equal(portOf(c.livenessProbe.httpGet.port), port, 'liveness probe on the port Gantry listens on');
    if (c.startupProbe) assert.equal(portOf(c.startupProbe.httpGet?.port), port);
  });

  test('the local tier is an emptyDir with a sizeLimit, mounted as the cache dir, and the cache budget fits in it', () => {
    const pod = gantry().spec.template.spec;
    assert.equal(gantry().spec.volumeClaimTemplates, undefined);
    const cfg = configFromEnv(env());
    const mount = gantryContainer().volumeMounts?.find((m) => m.mountPath === cfg.cacheDir) ?? assert.fail(`nothing is mounted at the cache dir ${cfg.cacheDir}`);
    const vol = pod.volumes?.find((v) => v.name === mount.name);
    assert.ok(vol?.emptyDir, `the cache volume ${mount.name} is not an emptyDir`);
    const limit = quantityBytes(vol.emptyDir.sizeLimit ?? assert.fail('the emptyDir has no sizeLimit'));
    // Past its sizeLimit the kubelet evicts the pod: the budget must stop eviction before that, with room for the index and fills.
    assert.ok(cfg.maxCacheBytes > 0, 'a bounded cache (GANTRY_MAX_CACHE_BYTES)');
    assert.ok(cfg.maxCacheBytes <= limit * 0.9, `maxCacheBytes ${cfg.maxCacheBytes} leaves too little of the emptyDir's ${limit} bytes`);
    const eph = gantryContainer().resources?.requests?.['ephemeral-storage'];
    if (eph !== undefined) assert.ok(quantityBytes(eph) >= limit, 'the ephemeral-storage request covers the emptyDir');
  });

  test('each pod gets a valid clustered config: node id from its name, advertise URL from its IP, workers from its CPU limit', () => {
    const c = gantryContainer();
    const e = env();
    assert.deepEqual(unknownGantryVars(Object.keys(e)), [], 'GANTRY_* variables that are no setting of Gantry');
    const cfg = configFromEnv(e);
    assertClustered(cfg, 'the Deployment');
    assert.equal(cfg.cluster.nodeId, POD_FIELDS['metadata.name']);
    assert.equal(cfg.cluster.advertiseUrl, `http://${POD_FIELDS['status.podIP']}:${cfg.listen.port}`);
    assert.equal(cfg.workers, cpuCores(c.resources?.limits?.['cpu'] ?? assert.fail('no CPU limit')));
    assert.equal(cfg.cacheDir, '/var/lib/gantry');
    for (const v of Object.values(e)) assert.doesNotMatch(v, /\$\(/, 'a $(VAR) reference left unexpanded');
    const byName = new Map((c.env ?? []).map((v, i) => [v.name, { ...v, i }]));
    assert.equal(byName.get('GANTRY_NODE_ID')?.valueFrom?.fieldRef?.fieldPath, 'metadata.name');
    assert.equal(byName.get('POD_IP')?.valueFrom?.fieldRef?.fieldPath, 'status.podIP');
    assert.equal(byName.get('GANTRY_ADVERTISE_URL')?.value, `http://$(POD_IP):${cfg.listen.port}`);
    assert.ok(byName.get('POD_IP')!.i < byName.get('GANTRY_ADVERTISE_URL')!.i, 'POD_IP is defined before GANTRY_ADVERTISE_URL uses it');
    assert.deepEqual(byName.get('GANTRY_WORKERS')?.valueFrom?.resourceFieldRef, { containerName: 'gantry', resource: 'limits.cpu', divisor: '1' });
    // The S3 tier: credentials for the SDK's default chain, the bucket's settings from the ConfigMap.
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) assert.ok(byName.get(k)?.valueFrom?.secretKeyRef, `${k} from a Secret`);
    assert.ok(cfg.storage.s3.endpoint && cfg.storage.s3.region && cfg.storage.s3.forcePathStyle);
    // Service links would add GANTRY_PORT, GANTRY_REDIS_PORT... to what Gantry reads.
    assert.equal(gantry().spec.template.spec.enableServiceLinks, false);
  });

  test('the Secret template has every key the Deployment and Redis read, each a CHANGE-ME placeholder', () => {
    const secrets = objs.filter((o): o is Secret => o.kind === 'Secret');
    assert.equal(secrets.length, 1);
    const s = secrets[0]!;
    const values = { ...s.data, ...s.stringData };
    const refs = [gantry(), redis()].flatMap((w) => w.spec.template.spec.containers.flatMap((c) => (c.env ?? []).flatMap((v) => (v.valueFrom?.secretKeyRef ? [v.valueFrom.secretKeyRef] : []))));
    for (const r of refs) {
      if (r.name === s.metadata.name) assert.ok(r.key in values, `Secret ${s.metadata.name} has no key ${r.key}`);
      else assert.equal(r.optional, true, `Secret ${r.name} is not in this directory: its reference must be optional`);
    }
    for (const key of ['peer-token', 'redis-password', 'aws-access-key-id', 'aws-secret-access-key']) {
      assert.ok(refs.some((r) => r.name === s.metadata.name && r.key === key), `nothing reads ${key}`);
    }
    for (const [k, v] of Object.entries(values)) assert.match(v, CHANGE_ME, `${k} is not marked as a placeholder`);
  });

  test('GANTRY_REDIS_URL points at the Redis Service, with the password Redis requires', () => {
    const cfg = configFromEnv(env());
    const u = new URL(cfg.cluster.redis.url!);
    const svc = theOne<Service>(objs, 'Service', u.hostname);
    const r = redis();
    assert.ok(selects(svc.spec.selector, r.spec.template.metadata.labels), `Service ${svc.metadata.name} does not select the Redis pods`);
    assert.ok(!selects(svc.spec.selector, gantry().spec.template.metadata.labels), `Service ${svc.metadata.name} selects Gantry pods too`);
    const port = svc.spec.ports.find((p) => p.port === Number(u.port || 6379)) ?? assert.fail(`Service ${svc.metadata.name} has no port ${u.port}`);
    const rc = r.spec.template.spec.containers[0]!;
    const target = typeof port.targetPort === 'number' ? port.targetPort : rc.ports.find((p) => p.name === port.targetPort)?.containerPort;
    assert.equal(target, 6379);
    // The same Secret key on both sides, expanded: Redis's --requirepass and the URL's password.
    const redisEnv = podEnv(rc, objs);
    const args = (rc.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, n: string) => redisEnv[n] ?? all));
    const pass = args[args.indexOf('--requirepass') + 1];
    assert.ok(pass && args.includes('--requirepass'), 'Redis requires a password');
    assert.equal(decodeURIComponent(u.password), pass);
    assert.equal(encodeURIComponent(pass), pass, 'the Redis password must not need escaping in the URL');
  });

  test('Redis: the official image, no persistence (leases, tokens and memos with TTLs, all rebuildable), a bounded memory', () => {
    const r = redis();
    const rc = r.spec.template.spec.containers[0]!;
    assert.match(rc.image, /^(redis:7|valkey\/valkey:8)(\.|$|-)/);
    assert.equal(r.spec.replicas ?? 1, 1);
    const args = rc.args ?? [];
    assert.equal(args[args.indexOf('--save') + 1], '', '--save ""');
    assert.equal(args[args.indexOf('--appendonly') + 1], 'no');
    assert.equal(r.spec.volumeClaimTemplates, undefined);
    for (const v of r.spec.template.spec.volumes ?? []) assert.equal(v.persistentVolumeClaim, undefined, `volume ${v.name} is persistent`);
    const maxmemory = args[args.indexOf('--maxmemory') + 1];
    const limit = rc.resources?.limits?.['memory'];
    assert.ok(maxmemory && limit, 'maxmemory and a memory limit');
    assert.ok(quantityBytes(maxmemory.replace(/mb$/i, 'M').replace(/gb$/i, 'G')) < quantityBytes(limit), 'maxmemory below the memory limit');
    assert.equal(rc.securityContext?.['readOnlyRootFilesystem'], true);
    assert.equal(r.spec.template.spec.securityContext?.['runAsNonRoot'], true);
  });

  test('runs as the StatefulSet does: same pod and container securityContext, resource bounds, no service account token', () => {
    const pod = gantry().spec.template.spec;
    const stsPod = statefulSet().spec.template.spec;
    assert.deepEqual(pod.securityContext, stsPod.securityContext);
    assert.deepEqual(gantryContainer().securityContext, stsPod.containers[0]!.securityContext);
    assert.equal(pod.automountServiceAccountToken, false);
    for (const k of ['cpu', 'memory']) {
      assert.ok(gantryContainer().resources?.requests?.[k], `requests.${k}`);
      assert.ok(gantryContainer().resources?.limits?.[k], `limits.${k}`);
    }
  });

  test('the client Service, the PodDisruptionBudget and the ServiceMonitor select the Gantry pods only', () => {
    const podLabels = gantry().spec.template.metadata.labels;
    const redisLabels = redis().spec.template.metadata.labels;
    const svc = theOne<Service>(objs, 'Service', 'gantry');
    assert.ok(selects(svc.spec.selector, podLabels) && !selects(svc.spec.selector, redisLabels));
    assert.deepEqual(svc.spec.ports.map((p) => [p.port, p.targetPort]), [[5000, 'http']]);
    const pdb = theOne<K8sObject & { spec: { selector: { matchLabels: Labels }; maxUnavailable?: number; minAvailable?: number } }>(objs, 'PodDisruptionBudget');
    assert.ok(selects(pdb.spec.selector.matchLabels, podLabels) && !selects(pdb.spec.selector.matchLabels, redisLabels));
    const replicas = gantry().spec.replicas!;
    const available = pdb.spec.maxUnavailable !== undefined ? replicas - pdb.spec.maxUnavailable : pdb.spec.minAvailable!;
    assert.ok(available >= 2 && available < replicas, `the budget keeps ${available} of ${replicas}: it must allow a drain and keep at least two`);
    const sm = theOne<K8sObject & { spec: { selector: { matchLabels: Labels }; endpoints: Array<{ port: string; path: string }> } }>(objs, 'ServiceMonitor');
    const scraped = objs.filter((o): o is Service => o.kind === 'Service' && selects(sm.spec.selector.matchLabels, o.metadata.labels ?? {}));
    assert.deepEqual(scraped.map((s) => s.metadata.name), ['gantry']);
    assert.equal(sm.spec.endpoints[0]?.path, '/metrics');
    assert.ok(svc.spec.ports.some((p) => p.name === sm.spec.endpoints[0]?.port));
  });

  test('the ConfigMap sets only Gantry settings, and the S3 endpoint it names is a valid URL', () => {
    const cm = theOne<ConfigMap>(objs, 'ConfigMap');
    const keys = Object.keys(cm.data ?? {});
    assert.ok(keys.length > 0);
    assert.deepEqual(keys.filter((k) => !GANTRY_VARS.has(k)), [], 'keys that are no Gantry variable');
    const s3 = configFromEnv(cm.data ?? {}).storage.s3;
    assert.ok(s3.bucket && s3.endpoint, 'the bucket and its endpoint');
  });
});

// ---- docker compose ----------------------------------------------------------------------------

type ComposeService = {
  build?: unknown;
  image?: string;
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
  ports?: string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test: string[] };
};
type Compose = { services: Record<string, ComposeService>; volumes?: Record<string, unknown> };

const NODES = ['gantry-a', 'gantry-b', 'gantry-c'];

function readCompose(file: string): Compose {
  // `<<:` merge keys: compose reads them, the yaml package only when asked to.
  return parseYaml(readFileSync(file, 'utf8'), { merge: true }) as Compose;
}

/** Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$` against `vars`. */
function interpolate(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (all, name?: string, colon?: string, def?: string, bare?: string) => {
    if (all === '$$') return '$';
    const n = name ?? bare!;
    const v = vars[n];
    if (def !== undefined && (v === undefined || (colon === ':' && v === ''))) return def;
    return v ?? '';
  });
}

function serviceEnv(svc: ComposeService, vars: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => [k, interpolate(String(v ?? ''), vars)]));
}

function dependsOn(svc: ComposeService): Record<string, string> {
  const d = svc.depends_on ?? [];
  return Array.isArray(d) ? Object.fromEntries(d.map((n) => [n, 'service_started'])) : Object.fromEntries(Object.entries(d).map(([n, c]) => [n, c.condition ?? 'service_started']));
}

describe('docker compose: several nodes (deploy/docker-compose.cluster.yml)', () => {
  const compose = readCompose(COMPOSE);
  const svc = (name: string): ComposeService => compose.services[name] ?? assert.fail(`no service ${name}`);
  const nodeConfigs = (vars: Record<string, string> = {}): Map<string, Config> => new Map(NODES.map((n) => [n, configFromEnv(serviceEnv(svc(n), vars))]));

  test('three Gantry nodes built like the single-node file, with Redis, MinIO, its bucket job and a load balancer', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), [...NODES, 'lb', 'minio', 'minio-init', 'redis'].sort());
    const one = readCompose(COMPOSE_ONE_NODE).services['gantry']!;
    for (const n of NODES) {
      assert.deepEqual(svc(n).build, one.build, `${n}: built as docker-compose.yml builds gantry`);
      assert.equal(svc(n).image, one.image);
    }
  });

  test('every variable has a default, and the secrets\' defaults are marked CHANGE-ME', () => {
    const text = readFileSync(COMPOSE, 'utf8');
    const refs = [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}/g)];
    assert.ok(refs.length > 0);
    for (const [all, , rest] of refs) assert.match(rest!, /^:?-/, `${all} has no default: unset, it would be empty`);
    for (const name of ['GANTRY_PEER_TOKEN', 'MINIO_ROOT_PASSWORD']) {
      const defaults = refs.filter((r) => r[1] === name).map((r) => r[2]!);
      assert.ok(defaults.length > 0, `${name} is not used`);
      for (const d of defaults) assert.match(d, CHANGE_ME, `${name}'s default is not marked as a placeholder`);
      assert.equal(new Set(defaults).size, 1, `${name} has different defaults in different places`);
    }
  });

  test('each node\'s environment passes Gantry\'s config parser, its cluster rules included, with the defaults and with real values', () => {
    for (const n of NODES) assert.deepEqual(unknownGantryVars(Object.keys(serviceEnv(svc(n)))), [], `${n}: GANTRY_* variables that are no setting of Gantry`);
    for (const [n, cfg] of nodeConfigs()) assertClustered(cfg, n);
    const token = 'f'.repeat(64);
    for (const cfg of nodeConfigs({ GANTRY_PEER_TOKEN: token, MINIO_ROOT_PASSWORD: 'x'.repeat(32) }).values()) assert.equal(cfg.cluster.peerToken, token);
  });

  test('each node has its own id, advertise URL (its service name, on the port it listens on) and cache volume', () => {
    const configs = nodeConfigs();
    const ids = [...configs.values()].map((c) => c.cluster.nodeId);
    const urls = [...configs.values()].map((c) => c.cluster.advertiseUrl);
    assert.equal(new Set(ids).size, NODES.length, `node ids: ${ids.join(', ')}`);
    assert.equal(new Set(urls).size, NODES.length, `advertise URLs: ${urls.join(', ')}`);
    const volumes = new Set<string>();
    for (const [n, cfg] of configs) {
      assert.equal(cfg.cluster.advertiseUrl, `http://${n}:${cfg.listen.port}`, `${n}: the others reach it by its service name`);
      const cache = (svc(n).volumes ?? []).filter((v) => v.split(':')[1] === cfg.cacheDir);
      assert.equal(cache.length, 1, `${n}: one volume at the cache dir ${cfg.cacheDir}`);
      const name = cache[0]!.split(':')[0]!;
      assert.ok(compose.volumes && name in compose.volumes, `${n}: volume ${name} is not declared`);
      assert.ok(!volumes.has(name), `${n}: cache volume ${name} is shared with another node`);
      volumes.add(name);
    }
  });

  test('the nodes share the peer token, and reach Redis and MinIO by their service names', () => {
    const configs = [...nodeConfigs().values()];
    assert.equal(new Set(configs.map((c) => c.cluster.peerToken)).size, 1, 'one peer token');
    for (const cfg of configs) {
      assert.equal(new URL(cfg.cluster.redis.url!).hostname, 'redis');
      assert.equal(new URL(cfg.storage.s3.endpoint!).hostname, 'minio');
      assert.equal(new URL(cfg.storage.s3.endpoint!).port, '9000');
      assert.equal(cfg.storage.s3.forcePathStyle, true, 'MinIO wants path-style addressing');
    }
    const redis = svc('redis');
    assert.match(redis.image ?? '', /^(redis:7|valkey\/valkey:8)(\.|$|-)/);
    const args = redis.command as string[];
    assert.equal(args[args.indexOf('--save') + 1], '', 'no persistence: --save ""');
    assert.equal(args[args.indexOf('--appendonly') + 1], 'no');
  });

  test('the nodes\' S3 credentials are MinIO\'s, their bucket the one minio-init creates, and they start after it', () => {
    const cases: Array<Record<string, string>> = [{}, { MINIO_ROOT_USER: 'admin', MINIO_ROOT_PASSWORD: 'p'.repeat(20), GANTRY_S3_BUCKET: 'other-bucket' }];
    for (const vars of cases) {
      const minio = serviceEnv(svc('minio'), vars);
      const init = serviceEnv(svc('minio-init'), vars);
      for (const n of NODES) {
        const e = serviceEnv(svc(n), vars);
        assert.equal(e['AWS_ACCESS_KEY_ID'], minio['MINIO_ROOT_USER'], n);
        assert.equal(e['AWS_SECRET_ACCESS_KEY'], minio['MINIO_ROOT_PASSWORD'], n);
        assert.equal(configFromEnv(e).storage.s3.bucket, init['BUCKET'], `${n}: the bucket minio-init makes`);
      }
      assert.deepEqual([init['MINIO_ROOT_USER'], init['MINIO_ROOT_PASSWORD']], [minio['MINIO_ROOT_USER'], minio['MINIO_ROOT_PASSWORD']]);
    }
    const init = svc('minio-init');
    assert.match(init.image ?? '', /^minio\/mc:/);
    const script = interpolate([init.entrypoint, init.command].flat().join('\n'), {});
    assert.match(script, /mc alias set local http:\/\/minio:9000 "\$MINIO_ROOT_USER" "\$MINIO_ROOT_PASSWORD"/);
    assert.match(script, /mc mb --ignore-existing "local\/\$BUCKET"/);
    assert.match(svc('minio').image ?? '', /^minio\/minio:/);
    for (const n of NODES) {
      // An unusable bucket stops a node at start-up; Redis is waited for 3 s only.
      assert.equal(dependsOn(svc(n))['minio-init'], 'service_completed_successfully', n);
      assert.equal(dependsOn(svc(n))['redis'], 'service_healthy', n);
    }
    assert.ok(svc('redis').healthcheck, 'service_healthy needs a healthcheck');
  });

  test('the load balancer publishes port 5000, mounts nginx/gantry-lb.conf and comes after the nodes', () => {
    const lb = svc('lb');
    assert.match(lb.image ?? '', /^nginx:/);
    assert.ok((lb.ports ?? []).some((p) => String(p) === '5000:5000'));
    assert.ok((lb.volumes ?? []).includes('./nginx/gantry-lb.conf:/etc/nginx/conf.d/default.conf:ro'));
    assert.deepEqual(Object.keys(dependsOn(lb)).sort(), NODES);
    for (const [name, s] of Object.entries(compose.services)) {
      for (const v of s.volumes ?? []) {
        const src = v.split(':')[0]!;
        if (src.startsWith('.')) assert.ok(existsSync(path.resolve(DEPLOY, src)), `${name}: bind-mount source ${src} does not exist`);
        else assert.ok(compose.volumes && src in compose.volumes, `${name}: named volume ${src} is not declared`);
      }
    }
    // Only the load balancer is published: the nodes are reached through it, and by each other.
    for (const n of NODES) assert.equal(svc(n).ports, undefined, `${n} publishes a port`);
  });
});

// ---- nginx ---------------------------------------------------------------------------------------

type Directive = { name: string; args: string[]; block?: Directive[] };

/** nginx's config syntax, enough for this file: directives, blocks, quoted strings, comments. */
function parseNginx(text: string): Directive[] {
  type Token = { punct: string } | { word: string };
  const tokens: Token[] = [...text.matchAll(/#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};"'#]+)/g)]
    .filter((m) => !m[0].startsWith('#'))
    .map((m): Token => (m[3] !== undefined ? { punct: m[3] } : { word: m[1] ?? m[2] ?? m[4] ?? '' }));
  let i = 0;
  const block = (nested: boolean): Directive[] => {
    const out: Directive[] = [];
    while (i < tokens.length) {
      const t = tokens[i++]!;
      if ('punct' in t) {
        assert.ok(t.punct === '}' && nested, `unexpected "${t.punct}"`);
        return out;
      }
      const d: Directive = { name: t.word, args: [] };
      for (;;) {
        const n = tokens[i++] ?? assert.fail(`"${d.name}" is not terminated`);
        if ('word' in n) d.args.push(n.word);
        else if (n.punct === ';') break;
        else if (n.punct === '{') {
          d.block = block(true);
          break;
        } else assert.fail(`unexpected "}" in "${d.name}"`);
      }
      out.push(d);
    }
    assert.ok(!nested, 'unclosed block');
    return out;
  };
  return block(false);
}

function find(ds: Directive[], name: string): Directive[] {
  return ds.filter((d) => d.name === name);
}

function one(ds: Directive[], name: string): Directive {
  const found = find(ds, name);
  assert.equal(found.length, 1, `expected one "${name}", found ${found.length}`);
  return found[0]!;
}

/** nginx time (`1h`, `600s`, `90`) in seconds. */
function seconds(v: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(v);
  assert.ok(m, `not an nginx time: ${v}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] ?? 's']!;
}

describe('nginx load balancer (deploy/nginx/gantry-lb.conf)', () => {
  const conf = parseNginx(readFileSync(LB_CONF, 'utf8'));
  const server = (): Directive[] => one(conf, 'server').block!;
  const setting = (name: string): string[] => one(server(), name).args;

  test('proxies to every node of the compose file, on the port each listens on', () => {
    const upstreams = find(conf, 'upstream');
    assert.equal(upstreams.length, 1);
    const up = upstreams[0]!;
    const compose = readCompose(COMPOSE);
    const targets = find(up.block!, 'server').map((d) => d.args[0]);
    const nodes = NODES.map((n) => `${n}:${configFromEnv(serviceEnv(compose.services[n]!)).listen.port}`);
    assert.deepEqual(targets.sort(), nodes.sort());
    const root = find(server(), 'location').find((l) => l.args.join(' ') === '/') ?? assert.fail('no location /');
    assert.deepEqual(one(root.block!, 'proxy_pass').args, [`http://${up.args[0]}`]);
    // `resolve` follows a recreated node's new address; it needs a resolver and a shared zone.
    for (const s of find(up.block!, 'server')) assert.ok(s.args.includes('resolve'), `${s.args[0]} without resolve`);
    assert.ok(find(up.block!, 'zone').length === 1 && find(conf, 'resolver').length === 1);
  });

  test('streams: buffering off both ways, no body size limit, long timeouts, HTTP/1.1 upstream, Host passed with its port', () => {
    assert.deepEqual(setting('proxy_buffering'), ['off']);
    assert.deepEqual(setting('proxy_request_buffering'), ['off']);
    assert.deepEqual(setting('client_max_body_size'), ['0']);
    assert.ok(seconds(setting('proxy_read_timeout')[0]!) >= 600, 'proxy_read_timeout of 10 minutes or more');
    assert.ok(seconds(setting('proxy_send_timeout')[0]!) >= 600, 'proxy_send_timeout of 10 minutes or more');
    assert.deepEqual(setting('proxy_http_version'), ['1.1']);
    const headers = new Map(find(server(), 'proxy_set_header').map((d) => [d.args[0]!.toLowerCase(), d.args[1]]));
    assert.equal(headers.get('host'), '$http_host', 'Host with its port: Gantry builds its token realm from it');
    assert.equal(headers.get('connection'), '', 'keep-alive to the nodes');
    assert.deepEqual(setting('listen'), ['5000']);
    const peer = find(server(), 'location').find((l) => l.args.join(' ') === '/_gantry/') ?? assert.fail('the peer endpoint is not closed');
    assert.deepEqual(one(peer.block!, 'return').args, ['404']);
  });
});

// ---- running it: nginx against three stand-in nodes, redis-server with the manifests' arguments ----

const NGINX = '/usr/sbin/nginx';
const REDIS_SERVER = '/usr/bin/redis-server';

/** Like promtool for deploy.test.ts: scripts/ensure-system-deps.sh installs them, and without them these tests fail. */
function required(bin: string, pkg: string): void {
  if (!existsSync(bin)) assert.fail(`${bin} is not installed: run \`bash scripts/ensure-system-deps.sh\` (as root) or \`apt-get install ${pkg}\``);
}

function nginxVersion(): [number, number, number] {
  required(NGINX, 'nginx');
  const r = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
  if (r.error) throw r.error;
  const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(`${r.stdout}${r.stderr}`) ?? assert.fail(`nginx -v: ${r.stdout}${r.stderr}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

type Seen = { node: number; url: string; host: string | undefined; proto: string | undefined };

describe('nginx load balancer, run with this machine\'s nginx against three stand-in nodes', () => {
  let dir: string;
  let nginx: SupervisedChild | undefined;
  let lbUrl: string;
  const nodes: http.Server[] = [];
  const seen: Seen[] = [];
  /** Called by a stand-in node when an upload's first bytes arrive, and to release a held response. */
  const hooks: { firstUploadBytes?: () => void; release?: () => void } = {};
  const BIG_BYTES = 256 * 2 ** 20;
  let bigWritten = 0;

  const handle = (node: number) => (req: IncomingMessage, res: ServerResponse): void => {
    seen.push({ node, url: req.url ?? '', host: req.headers.host, proto: req.headers['x-forwarded-proto'] as string | undefined });
    if (req.url === '/big') {
      // As much as the client takes: how far this gets while the client does not read is what nginx holds.
      const chunk = Buffer.alloc(2 ** 20, 3);
      const more = (): void => {
        while (bigWritten < BIG_BYTES) {
          bigWritten += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', more);
            return;
          }
        }
        res.end();
      };
      bigWritten = 0;
      more();
      return;
    }
    if (req.url === '/stream') {
      // The first bytes of a blob still downloading; the rest only once the test saw them arrive.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      res.write(Buffer.alloc(1000, 1));
      hooks.release = () => res.end(Buffer.alloc(1000, 2));
      return;
    }
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      if (bytes === 0) hooks.firstUploadBytes?.();
      bytes += chunk.length;
    });
    req.on('end', () => res.end(String(bytes)));
  };

  before(async () => {
    const version = nginxVersion();
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-lb-'));
    const ports: number[] = [];
    for (let i = 0; i < NODES.length; i++) {
      const s = http.createServer(handle(i));
      await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
      nodes.push(s);
      ports.push((s.address() as net.AddressInfo).port);
    }
    // The file as compose mounts it, with the nodes' names swapped for the stand-ins' addresses.
    // Before 1.27.3, nginx has no `resolve` (the image pinned in compose has it).
    const [maj, min, patch] = version;
    const hasResolve = maj > 1 || (maj === 1 && (min > 27 || (min === 27 && patch >= 3)));
    let text = readFileSync(LB_CONF, 'utf8');
    NODES.forEach((n, i) => {
      const re = new RegExp(`server ${n}:5000( resolve)?;`);
      assert.match(text, re);
      text = text.replace(re, `server 127.0.0.1:${ports[i]}${hasResolve ? ' resolve' : ''};`);
    });
    const start = async (port: number): Promise<SupervisedChild> => {
      assert.match(text, /^\s*listen 5000;$/m);
      await writeFile(path.join(dir, 'gantry-lb.conf'), text.replace(/^(\s*)listen 5000;$/m, `$1listen 127.0.0.1:${port};`));
      for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(path.join(dir, t), { recursive: true });
      await writeFile(path.join(dir, 'nginx.conf'), [
        'daemon off;',
        'master_process off;',
        `pid ${dir}/nginx.pid;`,
        'error_log stderr warn;',
        'events { worker_connections 64; }',
        'http {',
        '  access_log off;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t === 'client_body' ? 'body' : t};`),
        `  include ${dir}/gantry-lb.conf;`,
        '}',
        '',
      ].join('\n'));
      let pid = 0;
      return startGuardedChild({
        name: 'nginx',
        command: NGINX,
        args: ['-e', 'stderr', '-p', dir, '-c', path.join(dir, 'nginx.conf')],
        onSpawn: (p) => (pid = p),
        ready: () => listensOn(pid, port),
        readyTimeoutMs: 10_000,
        pollMs: 20,
        settleMs: 100,
        graceMs: 2000,
      });
    };
    await onFreePort(async (port) => {
      nginx = await start(port);
      lbUrl = `http://127.0.0.1:${port}`;
    });
  });

  after(async () => {
    hooks.release?.();
    await nginx?.stop();
    for (const s of nodes) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** One request through the load balancer, on its own connection, with the Host header given. */
  const request = (opts: { path: string; method?: string; host?: string; body?: AsyncIterable<Buffer> }): Promise<{ status: number; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const u = new URL(lbUrl);
      const req = http.request({ host: u.hostname, port: u.port, path: opts.path, method: opts.method ?? 'GET', headers: { host: opts.host ?? u.host }, agent: false });
      req.once('error', reject);
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.once('error', reject);
      });
      if (opts.body === undefined) req.end();
      else void (async () => {
        for await (const c of opts.body!) req.write(c);
        req.end();
      })().catch(reject);
    });

  test('requests go to every node, with the client\'s Host (port included) and X-Forwarded-Proto', async () => {
    seen.length = 0;
    for (let i = 0; i < 6; i++) assert.equal((await request({ path: '/v2/', host: 'mirror.example:5000' })).status, 200);
    assert.deepEqual([...new Set(seen.map((s) => s.node))].sort(), [0, 1, 2], 'every node got requests');
    for (const s of seen) {
      assert.equal(s.host, 'mirror.example:5000');
      assert.equal(s.proto, 'http');
    }
  });

  test('a client that stops reading holds the node back: nginx keeps no copy of the response (proxy_buffering off)', async () => {
    const req = http.get(`${lbUrl}/big`, { agent: false });
    try {
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
      });
      res.pause();
      // Wait until the node's writes stop advancing (the buffers in between are full), or it wrote everything.
      let last = -1;
      for (let i = 0; i < 100 && bigWritten !== last && bigWritten < BIG_BYTES; i++) {
        last = bigWritten;
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      // Socket buffers on both sides of nginx hold a few MiB; nginx spooling the response would take it all.
      assert.ok(bigWritten < BIG_BYTES / 4, `the node wrote ${bigWritten / 2 ** 20} MiB to a client that read nothing`);
    } finally {
      req.destroy();
    }
  });

  test('the first bytes of a response reach the client while the node is still sending', async () => {
    const first = await new Promise<Buffer>((resolve, reject) => {
      const req = http.get(`${lbUrl}/stream`, { agent: false }, (res) => {
        res.once('data', (c: Buffer) => resolve(c));
        res.once('error', reject);
        res.on('end', () => undefined);
      });
      req.once('error', reject);
      setTimeout(() => reject(new Error('the first 1000 bytes were held back by nginx')), 5000).unref();
    });
    assert.equal(first[0], 1);
    hooks.release?.();
  });

  test('an upload streams through to a node, and is not limited in size (proxy_request_buffering off, client_max_body_size 0)', async () => {
    const MiB = Buffer.alloc(2 ** 20, 7);
    const arrived = new Promise<void>((resolve) => (hooks.firstUploadBytes = resolve));
    async function* body(): AsyncGenerator<Buffer> {
      yield MiB;
      // The rest only once a node has the first bytes: nginx buffering the body would stall here.
      await Promise.race([arrived, new Promise((_, reject) => setTimeout(() => reject(new Error('the upload was held back by nginx')), 5000).unref())]);
      for (let i = 0; i < 7; i++) yield MiB;
    }
    const r = await request({ path: '/import', method: 'POST', body: body() });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), String(8 * 2 ** 20));
  });

  test('the peer endpoint is not reachable through the load balancer', async () => {
    seen.length = 0;
    const r = await request({ path: `/_gantry/peer/blobs/sha256:${'0'.repeat(64)}` });
    assert.equal(r.status, 404);
    assert.deepEqual(seen, [], 'a node was asked');
  });
});

describe('redis-server with the arguments the manifests give Redis', () => {

  /** Send one RESP command, read one reply line. */
  const command = (port: number, parts: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let said = '';
      s.setEncoding('utf8');
      s.once('connect', () => s.write(`*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`));
      s.on('data', (c: string) => {
        said += c;
        if (said.includes('\r\n')) {
          s.destroy();
          resolve(said);
        }
      });
      s.once('error', reject);
    });

  const run = async (args: string[], check: (port: number) => Promise<void>): Promise<void> => {
    required(REDIS_SERVER, 'redis-server');
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-redis-args-'));
    let redis: SupervisedChild | undefined;
    try {
      await onFreePort(async (port) => {
        let pid = 0;
        redis = await startGuardedChild({
          name: 'redis-server',
          command: REDIS_SERVER,
          // The image's defaults (port, dir, foreground) first, then the manifest's arguments.
          args: ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'no', '--logfile', '', ...args],
          cwd: dir,
          onSpawn: (p) => (pid = p),
          ready: () => listensOn(pid, port),
          readyTimeoutMs: 10_000,
          pollMs: 20,
          graceMs: 2000,
        });
        await check(port);
      });
      await redis?.stop();
      redis = undefined;
      // No persistence: not even a dump at shutdown.
      assert.deepEqual(readdirSync(dir), [], 'Redis wrote to its data directory');
    } finally {
      await redis?.stop();
      await rm(dir, { recursive: true, force: true });
    }
  };

  test('kubernetes: Redis starts with them, requires the password, and keeps nothing on disk', async () => {
    const objs = k8sObjects(K8S_CLUSTER);
    const w = objs.find((o): o is Workload => o.kind === 'Deployment' && o.metadata.name !== 'gantry') ?? assert.fail('no Redis Deployment');
    const c = w.spec.template.spec.containers[0]!;
    const env = podEnv(c, objs);
    const args = (c.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, n: string) => env[n] ?? all));
    const password = args[args.indexOf('--requirepass') + 1]!;
    await run(args, async (port) => {
      assert.match(await command(port, ['PING']), /^-NOAUTH/);
      assert.equal(await command(port, ['AUTH', password]), '+OK\r\n');
    });
  });

  test('compose: Redis starts with them, and keeps nothing on disk', async () => {
    const args = (readCompose(COMPOSE).services['redis']!.command as string[]).slice(1);
    await run(args, async (port) => assert.equal(await command(port, ['PING']), '+PONG\r\n'));
  });
});
