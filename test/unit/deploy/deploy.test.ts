/**
 * The deployment files in deploy/ cannot rot silently:
 *  - promtool (Debian `prometheus`; scripts/ensure-system-deps.sh installs it) checks the Prometheus
 *    config and rules, the PromQL of every dashboard panel, and unit-tests the alerts;
 *  - every gantry_* metric a dashboard panel or a rule reads is one Gantry really exports;
 *  - the compose file, the Kubernetes manifests and the Grafana provisioning parse and agree with
 *    each other and with the image (ports, probe paths, user, cache path, config).
 * No skipping: without promtool these tests fail, by design.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments, stringify as stringifyYaml } from 'yaml';
import { loadConfig } from '../../../src/config/load-config.ts';
import { startMirror, type Mirror } from '../../helpers/mirror.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DEPLOY = path.join(ROOT, 'deploy');
const ALERTS = path.join(DEPLOY, 'prometheus/alerts.yml');
const PROM_CONFIG = path.join(DEPLOY, 'prometheus/prometheus.yml');
const DASHBOARD = path.join(DEPLOY, 'grafana/dashboard.json');
const COMPOSE = path.join(DEPLOY, 'docker-compose.yml');
const K8S = path.join(DEPLOY, 'kubernetes');
const DOCKERFILE = path.join(DEPLOY, 'Dockerfile');
const UNIT = path.join(DEPLOY, 'systemd/gantry.service');

type Json = Record<string, unknown>;
type Rule = { record?: string; alert?: string; expr: string; for?: string; labels?: Record<string, string> };
type RuleGroup = { name: string; rules: Rule[] };

function promtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.fail('promtool is not installed: run `bash scripts/ensure-system-deps.sh` (as root) or `apt-get install prometheus`');
  }
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function readJson(file: string): Json {
  return JSON.parse(readFileSync(file, 'utf8')) as Json;
}

function ruleGroups(): RuleGroup[] {
  const doc = parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: RuleGroup[] };
  return doc.groups;
}

function allRules(): Rule[] {
  return ruleGroups().flatMap((g) => g.rules);
}

type Panel = { id?: number; type: string; title?: string; gridPos?: { x: number; y: number; w: number; h: number }; targets?: Array<{ expr?: string; datasource?: Json }>; panels?: Panel[]; datasource?: Json };

function dashboardPanels(): Panel[] {
  const out: Panel[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      out.push(p);
      if (p.panels) walk(p.panels);
    }
  };
  walk(readJson(DASHBOARD)['panels'] as Panel[]);
  return out;
}

/** Every PromQL expression in the dashboard: panel targets and templating queries. */
function dashboardExprs(): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of dashboardPanels()) {
    for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
  }
  const templating = (readJson(DASHBOARD)['templating'] as { list: Array<{ name: string; definition?: string }> }).list;
  for (const v of templating) if (v.definition) out.push({ where: `variable $${v.name}`, expr: v.definition });
  return out;
}

/** Replace Grafana's variables with something Prometheus parses. */
function grafanaToPromQL(expr: string): string {
  return expr
    .replace(/\$__(rate_interval|range|interval)\b/g, '5m')
    .replace(/\$\{?(job|instance)\}?/g, '.*');
}

const METRIC = /\bgantry_[a-zA-Z0-9_]+/g;

function metricNames(exprs: string[]): Set<string> {
  const names = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(METRIC)) names.add(m[0]);
  return names;
}

/** Names (and types) in Gantry's /metrics exposition: every metric has `# HELP` / `# TYPE` even with no samples. */
function exposedMetrics(text: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) types.set(m[1]!, m[2]!);
  }
  return types;
}

/** A name used in PromQL is exported if it is, or if it is a histogram/summary series (`_bucket`, `_sum`, `_count`) of one. */
function isExported(name: string, exported: Map<string, string>): boolean {
  if (exported.has(name)) return true;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (!m) return false;
  const type = exported.get(m[1]!);
  return type === 'histogram' || (type === 'summary' && m[2] !== 'bucket');
}

describe('prometheus config and rules (promtool)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-deploy-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('promtool check rules deploy/prometheus/alerts.yml', () => {
    const r = promtool(['check', 'rules', ALERTS]);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /SUCCESS: \d+ rules found/);
  });

  test('promtool check config deploy/prometheus/prometheus.yml (and the rule files it loads)', () => {
    const r = promtool(['check', 'config', PROM_CONFIG]);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /is valid prometheus config file syntax/);
    assert.match(r.output, /SUCCESS: 1 rule files found/);
  });

  test('every dashboard expression is valid PromQL (checked by promtool as recording rules)', async () => {
    const exprs = dashboardExprs();
    assert.ok(exprs.length >= 20, `expected a full dashboard, found ${exprs.length} expressions`);
    const rules = exprs.map((e, i) => ({
      record: `dashboard:expr_${i}`,
      // label_values(...) is Grafana's, not PromQL: check its selector argument.
      expr: grafanaToPromQL(e.expr.replace(/^label_values\((.*), *[a-z_]+\)$/, '$1')),
    }));
    const file = path.join(dir, 'dashboard-exprs.yml');
    await writeFile(file, stringifyYaml({ groups: [{ name: 'dashboard', rules }] }));
    const r = promtool(['check', 'rules', file]);
    const bad = r.status === 0 ? '' : `\n${exprs.map((e, i) => `expr_${i} ${e.where}: ${e.expr}`).join('\n')}`;
    assert.equal(r.status, 0, `${r.output}${bad}`);
  });

  test('the alerts fire when they should and not before (promtool test rules)', async () => {
    const file = path.join(dir, 'alerts.test.yml');
    await writeFile(file, stringifyYaml(alertUnitTests(ALERTS)));
    const r = promtool(['test', 'rules', file]);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });
});

describe('metric names used by the dashboard and the rules', () => {
  let mirror: Mirror;
  let exported: Map<string, string>;
  before(async () => {
    // Offline: the default upstream is Docker Hub, but nothing is requested from it.
    mirror = await startMirror({});
    const res = await fetch(`${mirror.url}/metrics`);
    assert.equal(res.status, 200);
    exported = exposedMetrics(await res.text());
  });
  after(async () => {
    await mirror?.destroy();
  });

  test('/metrics exposes Gantry metrics at all (sanity check of the parser)', () => {
    assert.equal(exported.get('gantry_requests_total'), 'counter');
    assert.equal(exported.get('gantry_http_request_duration_seconds'), 'histogram');
  });

  test('every gantry_* metric in deploy/grafana/dashboard.json is exported by Gantry', () => {
    const used = metricNames(dashboardExprs().map((e) => e.expr));
    const missing = [...used].filter((n) => !isExported(n, exported)).sort();
    assert.deepEqual(missing, [], `dashboard uses metrics Gantry does not export: ${missing.join(', ')}`);
  });

  test('every gantry_* metric in deploy/prometheus/alerts.yml is exported by Gantry', () => {
    const used = metricNames(allRules().map((r) => r.expr));
    const missing = [...used].filter((n) => !isExported(n, exported)).sort();
    assert.deepEqual(missing, [], `alert rules use metrics Gantry does not export: ${missing.join(', ')}`);
  });

  test('the dashboard shows what operators need', () => {
    const used = metricNames(dashboardExprs().map((e) => e.expr));
    for (const name of [
      'gantry_requests_total', // hit ratio
      'gantry_served_bytes_total', // bytes saved
      'gantry_upstream_bytes_total',
      'gantry_upstream_requests_total', // upstream traffic and errors
      'gantry_http_request_duration_seconds_bucket', // latency quantiles
      'gantry_inflight_fills',
      'gantry_inflight_waiters',
      'gantry_cache_bytes',
      'gantry_cache_entries',
      'gantry_cache_max_bytes',
      'gantry_evictions_total',
      'gantry_upstream_ratelimit_remaining',
      'gantry_upstream_ratelimit_limit',
      'gantry_upstream_up',
      'gantry_fills_total',
    ]) {
      assert.ok(used.has(name), `no dashboard panel uses ${name}`);
    }
    const exprs = dashboardExprs().map((e) => e.expr).join('\n');
    assert.match(exprs, /histogram_quantile\([^,]+, *sum by \(le[^)]*\) \(rate\(gantry_http_request_duration_seconds_bucket/);
  });

  test('the rules define every recording they use, and the required alerts exist', () => {
    const rules = allRules();
    const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
    for (const r of rules) {
      for (const m of r.expr.matchAll(/\bgantry:[a-z0-9_:]+/g)) {
        assert.ok(recorded.has(m[0]), `${r.alert ?? r.record} uses ${m[0]}, which no rule records`);
      }
    }
    const alerts = new Map(rules.flatMap((r) => (r.alert ? [[r.alert, r] as const] : [])));
    for (const name of ['GantryUpstreamDown', 'GantryHitRatioCollapse', 'GantryDiskNearlyFull', 'GantryRateLimitNearlyExhausted', 'GantryFillFailures']) {
      const a = alerts.get(name);
      assert.ok(a, `alert ${name} is missing`);
      assert.ok(['critical', 'warning', 'info'].includes(a.labels?.['severity'] ?? ''), `${name} needs a severity label`);
    }
    assert.match(alerts.get('GantryUpstreamDown')!.expr, /gantry_upstream_up\s*==\s*0/);
    assert.equal(alerts.get('GantryUpstreamDown')!.for, '5m');
    assert.match(alerts.get('GantryRateLimitNearlyExhausted')!.expr, /gantry_upstream_ratelimit_remaining[\s\S]*gantry_upstream_ratelimit_limit[\s\S]*< 0\.1/);
    assert.match(alerts.get('GantryFillFailures')!.expr, /outcome!="committed"/);
  });
});

/** promtool unit tests for the alerts: the intended cases fire, the benign ones don't. */
function alertUnitTests(rulesFile: string): Json {
  const L = 'job="gantry",instance="gantry:5000"';
  const labels = { job: 'gantry', instance: 'gantry:5000' };
  const firing = (alertname: string, evalTime: string, expLabels: Record<string, string>, annotations: Record<string, string>) => ({
    eval_time: evalTime,
    alertname,
    exp_alerts: [{ exp_labels: expLabels, exp_annotations: annotations }],
  });
  const silent = (alertname: string, evalTime: string) => ({ eval_time: evalTime, alertname, exp_alerts: [] });
  const rules = new Map(allRules().flatMap((r) => (r.alert ? [[r.alert, r] as const] : [])));
  // Annotations are compared too: render the few templates the expected values need.
  const annotationsOf = (name: string, vars: Record<string, string>): Record<string, string> => {
    const a = (rules.get(name) as Rule & { annotations?: Record<string, string> }).annotations ?? {};
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(a)) {
      out[k] = v.replace(/\{\{ *(\$labels\.([a-z_]+)|\$value \| humanizePercentage) *\}\}/g, (_m, _all, label: string | undefined) =>
        label ? (vars[label] ?? '') : (vars['$value%'] ?? ''),
      );
    }
    return out;
  };
  return {
    rule_files: [rulesFile],
    evaluation_interval: '1m',
    tests: [
      {
        name: 'GantryUpstreamDown: 5 minutes of an open circuit',
        interval: '1m',
        input_series: [
          { series: `gantry_upstream_up{${L},upstream="docker.io"}`, values: '1 1 1 0x20' },
          { series: `gantry_upstream_up{${L},upstream="ghcr.io"}`, values: '1x23' },
        ],
        alert_rule_test: [
          silent('GantryUpstreamDown', '6m'),
          firing('GantryUpstreamDown', '10m', { ...labels, upstream: 'docker.io', severity: 'warning' },
            annotationsOf('GantryUpstreamDown', { ...labels, upstream: 'docker.io' })),
        ],
      },
      {
        name: 'GantryDown: scrape failing for 5 minutes',
        interval: '1m',
        input_series: [{ series: `up{${L}}`, values: '1 1 0x10' }],
        alert_rule_test: [
          silent('GantryDown', '4m'),
          firing('GantryDown', '9m', { ...labels, severity: 'critical' }, annotationsOf('GantryDown', labels)),
        ],
      },
      {
        name: 'GantryRateLimitNearlyExhausted: below 10% of the limit, not with a zero or absent limit',
        interval: '1m',
        input_series: [
          { series: `gantry_upstream_ratelimit_limit{${L},upstream="docker.io"}`, values: '100x10' },
          { series: `gantry_upstream_ratelimit_remaining{${L},upstream="docker.io"}`, values: '50 20 5x9' },
          { series: `gantry_upstream_ratelimit_limit{${L},upstream="quay.io"}`, values: '0x10' },
          { series: `gantry_upstream_ratelimit_remaining{${L},upstream="quay.io"}`, values: '0x10' },
        ],
        alert_rule_test: [
          silent('GantryRateLimitNearlyExhausted', '1m'),
          firing('GantryRateLimitNearlyExhausted', '6m', { ...labels, upstream: 'docker.io', severity: 'warning' },
            annotationsOf('GantryRateLimitNearlyExhausted', { ...labels, upstream: 'docker.io', '$value%': '5%' })),
        ],
      },
      {
        name: 'GantryDiskNearlyFull / GantryCacheOverBudget: only with a budget',
        interval: '1m',
        input_series: [
          { series: `gantry_cache_max_bytes{${L}}`, values: '1000x60' },
          { series: `gantry_cache_bytes{${L}}`, values: '500 960x59' },
          { series: 'gantry_cache_max_bytes{job="gantry",instance="unbounded:5000"}', values: '0x60' },
          { series: 'gantry_cache_bytes{job="gantry",instance="unbounded:5000"}', values: '99999999x60' },
        ],
        alert_rule_test: [
          silent('GantryDiskNearlyFull', '20m'),
          firing('GantryDiskNearlyFull', '45m', { ...labels, severity: 'info' }, annotationsOf('GantryDiskNearlyFull', { ...labels, '$value%': '96%' })),
          silent('GantryCacheOverBudget', '45m'),
        ],
      },
      {
        name: 'GantryFillFailures: a third of fills failing; GantryFillVerificationFailures on one digest mismatch',
        interval: '1m',
        input_series: [
          { series: `gantry_fills_total{${L},outcome="committed"}`, values: '0+10x40' },
          { series: `gantry_fills_total{${L},outcome="upstream_error"}`, values: '0x10 0+5x30' },
          { series: `gantry_fills_total{${L},outcome="digest_mismatch"}`, values: '0x20 1x20' },
        ],
        alert_rule_test: [
          silent('GantryFillFailures', '10m'),
          silent('GantryFillVerificationFailures', '15m'),
          firing('GantryFillFailures', '35m', { ...labels, severity: 'warning' }, annotationsOf('GantryFillFailures', { ...labels, '$value%': '33.33%' })),
          firing('GantryFillVerificationFailures', '25m', { ...labels, outcome: 'digest_mismatch', severity: 'warning' },
            annotationsOf('GantryFillVerificationFailures', { ...labels, outcome: 'digest_mismatch' })),
        ],
      },
      {
        name: 'GantryHitRatioCollapse: from 90% for a day to 10%',
        interval: '1m',
        input_series: [
          // One request per second; 54 of 60 hits per minute for a day, then 6 of 60.
          { series: `gantry_requests_total{${L},kind="blob",method="GET",result="hit",status="200"}`, values: '0+54x1440 77760+6x120' },
          { series: `gantry_requests_total{${L},kind="blob",method="GET",result="miss",status="200"}`, values: '0+6x1440 8640+54x120' },
        ],
        alert_rule_test: [
          silent('GantryHitRatioCollapse', '1430m'),
          silent('GantryHitRatioCollapse', '1460m'),
          firing('GantryHitRatioCollapse', '1500m', { ...labels, severity: 'warning' }, annotationsOf('GantryHitRatioCollapse', { ...labels, '$value%': '10%' })),
        ],
      },
    ],
  };
}

describe('docker-compose, Grafana provisioning and the dashboard', () => {
  test('deploy/docker-compose.yml parses and wires gantry, prometheus and grafana to the files here', () => {
    const compose = parseYaml(readFileSync(COMPOSE, 'utf8')) as { services: Record<string, Json>; volumes?: Json };
    assert.deepEqual(Object.keys(compose.services).sort(), ['gantry', 'grafana', 'prometheus']);
    const gantry = compose.services['gantry']!;
    const build = gantry['build'] as { context: string; dockerfile: string };
    assert.equal(path.resolve(DEPLOY, build.context), ROOT, 'the build context is the repository root');
    assert.equal(path.resolve(path.resolve(DEPLOY, build.context), build.dockerfile), DOCKERFILE);
    assert.ok((gantry['ports'] as string[]).some((p) => String(p).endsWith(':5000')));
    assert.ok((gantry['volumes'] as string[]).some((v) => v.endsWith(':/var/lib/gantry')));
    for (const [name, svc] of Object.entries(compose.services)) {
      for (const v of (svc['volumes'] as string[] | undefined) ?? []) {
        const src = v.split(':')[0]!;
        if (src.startsWith('.')) assert.ok(existsSync(path.resolve(DEPLOY, src)), `${name}: bind-mount source ${src} does not exist`);
        else assert.ok(compose.volumes && src in compose.volumes, `${name}: named volume ${src} is not declared`);
      }
    }
    const prom = JSON.stringify(compose.services['prometheus']);
    assert.match(prom, /prometheus\.yml:\/etc\/prometheus\/prometheus\.yml/);
    assert.match(prom, /alerts\.yml:\/etc\/prometheus\/alerts\.yml/, 'alerts.yml sits next to prometheus.yml, as rule_files expects');
    const promConfig = parseYaml(readFileSync(PROM_CONFIG, 'utf8')) as { rule_files: string[]; scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }> };
    assert.deepEqual(promConfig.rule_files, ['alerts.yml']);
    const job = promConfig.scrape_configs.find((s) => s.job_name === 'gantry');
    assert.deepEqual(job?.static_configs[0]?.targets, ['gantry:5000']);
  });

  test('Grafana provisioning parses, and the dashboard provider path is where compose mounts dashboard.json', () => {
    const prov = path.join(DEPLOY, 'grafana/provisioning');
    const ds = parseYaml(readFileSync(path.join(prov, 'datasources/prometheus.yml'), 'utf8')) as { datasources: Array<{ type: string; url: string }> };
    assert.equal(ds.datasources[0]?.type, 'prometheus');
    assert.equal(ds.datasources[0]?.url, 'http://prometheus:9090');
    const dash = parseYaml(readFileSync(path.join(prov, 'dashboards/gantry.yml'), 'utf8')) as { providers: Array<{ options: { path: string } }> };
    const providerPath = dash.providers[0]!.options.path;
    const grafana = (parseYaml(readFileSync(COMPOSE, 'utf8')) as { services: Record<string, { volumes: string[] }> }).services['grafana']!;
    assert.ok(grafana.volumes.includes(`./grafana/dashboard.json:${providerPath}/dashboard.json:ro`), `dashboard.json is not mounted under ${providerPath}`);
    assert.ok(grafana.volumes.includes('./grafana/provisioning:/etc/grafana/provisioning:ro'));
  });

  test('the dashboard is well formed: unique ids, no overlapping panels, every query on the $datasource variable', () => {
    const d = readJson(DASHBOARD);
    assert.equal(d['uid'], 'gantry-overview');
    const panels = dashboardPanels();
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'duplicate panel ids');
    const cells = new Set<string>();
    for (const p of panels) {
      const g = p.gridPos!;
      assert.ok(g.x + g.w <= 24, `panel "${p.title}" is wider than the grid`);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          assert.ok(!cells.has(`${x},${y}`), `panel "${p.title}" overlaps another at ${x},${y}`);
          cells.add(`${x},${y}`);
        }
      }
      if (p.type === 'row') continue;
      assert.ok(p.targets && p.targets.length > 0, `panel "${p.title}" has no query`);
      for (const t of p.targets) assert.deepEqual(t.datasource, { type: 'prometheus', uid: '${datasource}' }, `panel "${p.title}"`);
    }
  });
});

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [k: string]: unknown };
type Probe = { httpGet: { path: string; port: string | number } };
type Container = {
  name: string;
  args?: string[];
  ports: Array<{ name?: string; containerPort: number }>;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { readOnlyRootFilesystem?: boolean; runAsNonRoot?: boolean; allowPrivilegeEscalation?: boolean };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
};

function k8sObjects(): Array<K8sObject & { file: string }> {
  const out: Array<K8sObject & { file: string }> = [];
  for (const f of readdirSync(K8S).filter((n) => n.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(K8S, f), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${f}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const obj = doc.toJS() as K8sObject | null;
      if (obj) out.push({ ...obj, file: f });
    }
  }
  return out;
}

describe('kubernetes manifests', () => {
  const one = (kind: string, name?: string): K8sObject => {
    const found = k8sObjects().filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
    assert.equal(found.length, 1, `expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
    return found[0]!;
  };
  const statefulSet = () => one('StatefulSet') as K8sObject & {
    spec: {
      serviceName: string;
      selector: { matchLabels: Record<string, string> };
      template: { metadata: { labels: Record<string, string> }; spec: { securityContext: Record<string, unknown>; containers: Container[]; volumes: Array<{ name: string; configMap?: { name: string } }> } };
      volumeClaimTemplates: Array<{ metadata: { name: string }; spec: { accessModes: string[]; resources: { requests: { storage: string } } } }>;
    };
  };
  const gantryContainer = (): Container => statefulSet().spec.template.spec.containers.find((c) => c.name === 'gantry')!;

  test('every manifest parses, has apiVersion/kind/name, and kustomization.yaml lists every other file', () => {
    const objs = k8sObjects();
    for (const o of objs) {
      assert.ok(o.apiVersion && o.kind, `${o.file}: apiVersion and kind`);
      if (o.kind !== 'Kustomization') assert.ok(o.metadata?.name, `${o.file}: ${o.kind} without metadata.name`);
    }
    const kustomization = objs.find((o) => o.kind === 'Kustomization') as (K8sObject & { resources: string[] }) | undefined;
    assert.ok(kustomization, 'kustomization.yaml');
    const files = readdirSync(K8S).filter((n) => n.endsWith('.yaml') && n !== 'kustomization.yaml').sort();
    assert.deepEqual([...kustomization.resources].sort(), files);
  });

  test('the StatefulSet probes /healthz (liveness) and /readyz (readiness) on the container port Gantry listens on', async () => {
    const c = gantryContainer();
    const portOf = (p: string | number): number => (typeof p === 'number' ? p : c.ports.find((cp) => cp.name === p)!.containerPort);
    assert.equal(c.livenessProbe?.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe?.httpGet.path, '/readyz');
    const configPath = c.args?.[c.args.indexOf('--config') + 1];
    assert.ok(configPath, 'the container runs with --config');
    const config = await configMapConfig(configPath);
    assert.equal(portOf(c.livenessProbe.httpGet.port), config.listen.port);
    assert.equal(portOf(c.readinessProbe.httpGet.port), config.listen.port);
    if (c.startupProbe) assert.equal(portOf(c.startupProbe.httpGet.port), config.listen.port);
    assert.equal(c.ports[0]?.containerPort, 5000);
  });

  test('the StatefulSet runs non-root with a read-only root filesystem, the cache on a PVC, and resource bounds', () => {
    const sts = statefulSet();
    const podSec = sts.spec.template.spec.securityContext;
    const c = gantryContainer();
    assert.equal(podSec['runAsNonRoot'], true);
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
    // The image's numeric USER is the pod's runAsUser, so the PVC (fsGroup) is writable by it.
    const user = /^USER (\d+)(?::(\d+))?$/m.exec(readFileSync(DOCKERFILE, 'utf8'));
    assert.ok(user, 'deploy/Dockerfile sets a numeric USER');
    assert.equal(podSec['runAsUser'], Number(user[1]));
    assert.equal(podSec['fsGroup'], Number(user[2] ?? user[1]));
    const vct = sts.spec.volumeClaimTemplates;
    assert.equal(vct.length, 1);
    const cacheMount = c.volumeMounts.find((m) => m.name === vct[0]!.metadata.name);
    assert.equal(cacheMount?.mountPath, '/var/lib/gantry');
    assert.ok(vct[0]!.spec.resources.requests.storage);
    for (const k of ['cpu', 'memory']) {
      assert.ok(c.resources?.requests?.[k], `requests.${k}`);
      assert.ok(c.resources?.limits?.[k], `limits.${k}`);
    }
    assert.deepEqual(sts.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'gantry' });
    for (const [k, v] of Object.entries(sts.spec.selector.matchLabels)) assert.equal(sts.spec.template.metadata.labels[k], v);
    one('Service', sts.spec.serviceName);
  });

  test('the ConfigMap holds a valid Gantry config, mounted where --config points', async () => {
    const c = gantryContainer();
    const config = await configMapConfig(c.args![c.args!.indexOf('--config') + 1]!);
    assert.ok(config.maxCacheBytes > 0, 'a bounded cache on a fixed-size PVC');
  });

  test('the Service and the ServiceMonitor select Gantry and scrape /metrics on the named port', () => {
    const svc = one('Service', 'gantry') as K8sObject & { spec: { selector: Record<string, string>; ports: Array<{ name: string; port: number; targetPort: string | number }> } };
    const sts = statefulSet();
    for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(sts.spec.template.metadata.labels[k], v);
    assert.equal(svc.spec.ports[0]?.targetPort, gantryContainer().ports[0]?.name);
    const sm = one('ServiceMonitor') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<{ port: string; path: string }> } };
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(sm.spec.endpoints[0]?.path, '/metrics');
    assert.ok(svc.spec.ports.some((p) => p.name === sm.spec.endpoints[0]?.port));
    const selected = k8sObjects().filter((o) => o.kind === 'Service' && Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v));
    assert.deepEqual(selected.map((o) => o.metadata.name), ['gantry'], 'exactly one Service scraped (not the headless one too)');
  });
});

/** Load the ConfigMap file mounted at `configPath` through Gantry's own config loader. */
async function configMapConfig(configPath: string) {
  const sts = k8sObjects().find((o) => o.kind === 'StatefulSet') as unknown as {
    spec: { template: { spec: { containers: Container[]; volumes: Array<{ name: string; configMap?: { name: string } }> } } };
  };
  const c = sts.spec.template.spec.containers[0]!;
  const mount = c.volumeMounts.find((m) => configPath.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `no volume is mounted at ${path.dirname(configPath)}`);
  const vol = sts.spec.template.spec.volumes.find((v) => v.name === mount.name);
  assert.ok(vol?.configMap, `${mount.mountPath} is not a ConfigMap volume`);
  const cm = k8sObjects().find((o) => o.kind === 'ConfigMap' && o.metadata.name === vol.configMap!.name) as (K8sObject & { data: Record<string, string> }) | undefined;
  assert.ok(cm, `ConfigMap ${vol.configMap.name} not found`);
  const key = path.basename(configPath);
  assert.ok(cm.data[key], `ConfigMap ${cm.metadata.name} has no ${key}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'gantry-k8s-config-'));
  try {
    const file = path.join(dir, key);
    await writeFile(file, cm.data[key]);
    return await loadConfig({ configPath: file }, {});
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('Dockerfile and systemd unit', () => {
  test('deploy/Dockerfile: node 24 base, compiled build with prod deps only, non-root, healthcheck on /healthz, cache volume, port 5000', () => {
    const df = readFileSync(DOCKERFILE, 'utf8');
    assert.match(df, /^ARG NODE_IMAGE=node:24-slim$/m);
    // Compiled with dev dependencies, which are then pruned; the runtime stage gets dist/, not src/.
    assert.match(df, /^RUN npm ci --include=dev$/m);
    assert.match(df, /^RUN npx tsc -p tsconfig\.build\.json \\\n \&\& npm prune --omit=dev\b/m);
    assert.match(df, /^COPY --from=build \/app\/dist \.\/dist$/m);
    assert.doesNotMatch(df, /^COPY --from=build \/app\/src/m);
    assert.match(df, /^USER \d+:\d+$/m);
    assert.match(df, /^HEALTHCHECK [\s\S]*fetch\('http:\/\/127\.0\.0\.1:5000\/healthz'\)/m);
    assert.match(df, /^VOLUME \/var\/lib\/gantry$/m);
    assert.match(df, /GANTRY_CACHE_DIR=\/var\/lib\/gantry/);
    assert.match(df, /^EXPOSE 5000$/m);
    assert.match(df, /^ENTRYPOINT \["bin\/gantry"\]$/m);
    assert.match(df, /^COPY bin \.\/bin$/m);
    assert.ok(existsSync(path.join(ROOT, 'bin/gantry')));
    // BuildKit's per-Dockerfile ignore file keeps node_modules and the cache out of the context.
    const ignore = readFileSync(`${DOCKERFILE}.dockerignore`, 'utf8');
    assert.match(ignore, /^\*$/m);
    for (const keep of ['!package.json', '!package-lock.json', '!tsconfig.json', '!tsconfig.build.json', '!src/', '!bin/']) assert.ok(ignore.split('\n').includes(keep), keep);
  });

  test('deploy/systemd/gantry.service is hardened and uses /var/lib/gantry', async (t) => {
    const unit = readFileSync(UNIT, 'utf8');
    const has = (line: string): void => assert.ok(unit.split('\n').includes(line), `missing: ${line}`);
    for (const line of [
      'DynamicUser=yes', 'StateDirectory=gantry', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes',
      'NoNewPrivileges=yes', 'CapabilityBoundingSet=', 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
      'SystemCallFilter=@system-service', 'MemoryDenyWriteExecute=no', 'Environment=GANTRY_CACHE_DIR=/var/lib/gantry',
    ]) has(line);
    assert.match(unit, /^LimitNOFILE=\d+$/m);
    assert.match(unit, /^ExecStart=\S*bin\/gantry\b/m);
    // systemd-analyze checks directive names and values when it is there. It wants the ExecStart
    // binary to exist, so a copy runs with this Node.
    if (spawnSync('systemd-analyze', ['--version']).error) {
      t.diagnostic('systemd-analyze not installed: static checks only');
      return;
    }
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-unit-'));
    try {
      const copy = path.join(dir, 'gantry.service');
      await writeFile(copy, unit.replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'systemd-analyze verify printed warnings');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
