import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv from 'ajv';
import { parse } from 'yaml';
import { defineContainerMetrics, defineGpuMetrics, defineHostMetrics } from '../../libs/health/src';
import { defineJobMetrics } from '../../libs/jobs/src';
import { createRegistry, createTunnelMetrics } from '../../libs/metrics/src';
import { metricReason } from '../../libs/tunnel/src';

/**
 * docker/monitoring/: the alert rules pass promtool (syntax and their own unit tests), the
 * Grafana dashboard validates against a schema, and every metric an expression names is one the
 * daemons define, so a renamed metric cannot leave a panel or an alert silently empty.
 */
const DIR = path.join(__dirname, '..', '..', 'docker', 'monitoring');
const read = (f: string) => readFileSync(path.join(DIR, f), 'utf8');

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('promtool not found: apt-get install prometheus (Debian; .ci/run does this)');
  }
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every sample name the worker's and relay's registries can expose, plus Prometheus's `up`. */
function definedMetricNames(): Set<string> {
  const registry = createRegistry('worker');
  defineGpuMetrics(registry);
  defineContainerMetrics(registry);
  defineHostMetrics(registry);
  defineJobMetrics(registry);
  createTunnelMetrics(registry, metricReason);
  const names = new Set(['up']);
  for (const m of registry.getMetricsAsArray()) {
    const { name, type } = m as unknown as { name: string; type: string };
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
  }
  return names;
}

/**
 * The values each closed label takes, from the code that sets them: tunnel_handshakes_total's
 * `result` (TunnelMetrics.handshake's type: a value not in it does not compile here) and the
 * `daemon` label each registry puts on every series.
 */
type HandshakeResult = Parameters<ReturnType<typeof createTunnelMetrics>['handshake']>[0];
const HANDSHAKE_RESULTS: HandshakeResult[] = ['ok', 'failed'];
const CLOSED_LABELS: Record<string, Record<string, string[]>> = {
  tunnel_handshakes_total: { result: HANDSHAKE_RESULTS },
  '*': { daemon: ['relay', 'worker'] },
};

/** `metric{label="value"}` equality matchers in a PromQL text (or a description quoting one). */
function equalityMatchers(expr: string): { metric: string; label: string; value: string }[] {
  const out: { metric: string; label: string; value: string }[] = [];
  for (const sel of expr.matchAll(/([a-zA-Z_:][\w:]*)?\{([^}]*)\}/g)) {
    for (const m of sel[2].matchAll(/(\w+)\s*=\s*"([^"]*)"/g))
      out.push({ metric: sel[1] ?? '', label: m[1], value: m[2] });
  }
  return out;
}

/** Matchers that ask a closed label for a value the daemons never set: a panel or alert never fires. */
function impossibleMatchers(texts: string[]): string[] {
  return texts.flatMap((t) =>
    equalityMatchers(t)
      .filter(({ metric, label, value }) => {
        const allowed = CLOSED_LABELS[metric]?.[label] ?? CLOSED_LABELS['*'][label];
        return allowed !== undefined && !allowed.includes(value);
      })
      .map(({ metric, label, value }) => `${metric}{${label}="${value}"}`),
  );
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression selects (functions, labels and keywords left out). */
function selectedMetrics(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const out: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = s.slice(m.index + m[0].length);
    if (/^\s*\(/.test(rest) || KEYWORDS.has(m[0].toLowerCase())) continue;
    if (/^\d/.test(s.slice(m.index - 1, m.index))) continue; // the `e` of 1e3, the `m` of 5m
    out.push(m[0]);
  }
  return out;
}

const DASHBOARD_SCHEMA = {
  type: 'object',
  required: ['uid', 'title', 'schemaVersion', 'panels'],
  properties: {
    uid: { type: 'string', pattern: '^[a-zA-Z0-9_-]{1,40}$' },
    title: { type: 'string', minLength: 1 },
    schemaVersion: { type: 'integer', minimum: 30 },
    panels: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['id', 'type', 'title', 'gridPos'],
        properties: {
          id: { type: 'integer' },
          type: { enum: ['row', 'timeseries', 'stat', 'gauge', 'table', 'bargauge'] },
          title: { type: 'string', minLength: 1 },
          gridPos: {
            type: 'object',
            required: ['h', 'w', 'x', 'y'],
            properties: {
              h: { type: 'integer', minimum: 1 },
              w: { type: 'integer', minimum: 1, maximum: 24 },
              x: { type: 'integer', minimum: 0, maximum: 23 },
              y: { type: 'integer', minimum: 0 },
            },
          },
          datasource: {
            type: 'object',
            required: ['type', 'uid'],
            properties: { type: { const: 'prometheus' }, uid: { type: 'string' } },
          },
          targets: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              required: ['refId', 'expr'],
              properties: { refId: { type: 'string' }, expr: { type: 'string', minLength: 1 } },
            },
          },
        },
        if: { properties: { type: { const: 'row' } } },
        then: {},
        else: { required: ['datasource', 'targets'] },
      },
    },
  },
} as const;

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; w: number };
  datasource?: { uid: string };
  targets?: { expr: string }[];
}

describe('docker/monitoring', () => {
  const defined = definedMetricNames();

  it('selectedMetrics reads names out of PromQL (and the check can fail)', () => {
    expect(
      selectedMetrics(
        'histogram_quantile(0.95, sum by (experiment, le) (rate(gpu_sidecar_job_run_seconds_bucket{state="a b"}[30m]))) > 1e3',
      ),
    ).toEqual(['gpu_sidecar_job_run_seconds_bucket']);
    expect(
      selectedMetrics('DCGM_FI_DEV_GPU_TEMP >= on(instance) group_left() gpu_max_x or up == 0'),
    ).toEqual(['DCGM_FI_DEV_GPU_TEMP', 'gpu_max_x', 'up']);
    expect(defined.has('gpu_max_x')).toBe(false);
    expect(defined.has('DCGM_FI_DEV_GPU_TEMP')).toBe(true);
    expect(defined.has('tunnel_rtt_seconds_bucket')).toBe(true);
  });

  it('impossibleMatchers finds a label value the daemons never set (and the check can fail)', () => {
    expect(
      impossibleMatchers([
        'sum(increase(tunnel_handshakes_total{result="fail"}[1h])) + tunnel_up{daemon="relay"}',
        'tunnel_handshakes_total{result="failed", reason="bad key"} or up{daemon="front"}',
      ]),
    ).toEqual(['tunnel_handshakes_total{result="fail"}', 'up{daemon="front"}']);
  });

  it('every label value the alerts and the dashboard ask for is one the daemons set', () => {
    const rules = (
      parse(read('alerts.yml')) as {
        groups: { rules: { expr: string; annotations?: Record<string, string> }[] }[];
      }
    ).groups.flatMap((g) => g.rules);
    const dash = JSON.parse(read('grafana-dashboard.json')) as { panels: Panel[] };
    const texts = [
      ...rules.flatMap((r) => [r.expr, ...Object.values(r.annotations ?? {})]),
      ...dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ];
    expect(texts.join('\n')).toContain('tunnel_handshakes_total{result=');
    expect(impossibleMatchers(texts)).toEqual([]);
  });

  it("prometheus.yml adds no target label the daemons' series carry already", async () => {
    // Prometheus would rename theirs to exported_<label> on every series.
    const carried = new Set<string>();
    for (const daemon of ['relay', 'worker'] as const) {
      const registry = createRegistry(daemon);
      createTunnelMetrics(registry, metricReason).handshake('ok');
      for (const line of (await registry.metrics()).split('\n')) {
        if (line.startsWith('#')) continue;
        for (const m of /\{(.*)\}/.exec(line)?.[1].matchAll(/(\w+)="/g) ?? []) carried.add(m[1]);
      }
    }
    expect(carried.has('daemon')).toBe(true);
    const config = parse(read('prometheus.yml')) as {
      scrape_configs: { static_configs: { labels?: Record<string, string> }[] }[];
    };
    const added = config.scrape_configs.flatMap((c) =>
      c.static_configs.flatMap((sc) => Object.keys(sc.labels ?? {})),
    );
    expect(added.filter((l) => carried.has(l))).toEqual([]);
  });

  it('prometheus.yml loads alerts.yml, and both pass promtool check config', () => {
    expect(parse(read('prometheus.yml')).rule_files).toEqual(['alerts.yml']);
    const r = promtool('check', 'config', 'prometheus.yml');
    expect(r.out).toContain('SUCCESS: 9 rules found');
    expect(r.status).toBe(0);
  });

  it('the alert rules pass promtool check rules and their unit tests', () => {
    const check = promtool('check', 'rules', 'alerts.yml');
    expect(check.out).toContain('SUCCESS');
    expect(check.status).toBe(0);
    const test = promtool('test', 'rules', 'alerts.test.yml');
    expect(test.out).toContain('SUCCESS');
    expect(test.status).toBe(0);
  });

  it('has the alerts the issue asks for, each on metrics the daemons define', () => {
    const rules = (
      parse(read('alerts.yml')) as { groups: { rules: { alert: string; expr: string }[] }[] }
    ).groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        'GpuHot',
        'GpuLost',
        'QueueStuck',
        'JobFailureRate',
        'TunnelDown',
        'DiskLow',
        'RedisDown',
      ]),
    );
    for (const r of rules) {
      expect(selectedMetrics(r.expr).length).toBeGreaterThan(0);
      const unknown = selectedMetrics(r.expr).filter((n) => !defined.has(n));
      expect({ alert: r.alert, unknown }).toEqual({ alert: r.alert, unknown: [] });
    }
  });

  it('the Grafana dashboard validates and every panel expression names defined metrics', () => {
    const dash = JSON.parse(read('grafana-dashboard.json')) as { uid: string; panels: Panel[] };
    const validate = new Ajv({ allErrors: true }).compile(DASHBOARD_SCHEMA);
    expect(validate(dash) ? [] : validate.errors).toEqual([]);
    expect(dash.uid).toBe('gpu-sidecar');
    const ids = dash.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dash.panels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    const rows = dash.panels.filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(expect.arrayContaining(['GPUs', 'Queue', 'Jobs', 'Tunnels']));
    // The panels' data source is the one provisioning creates.
    const dsUid = (parse(read('grafana-datasource.yml')) as { datasources: { uid: string }[] })
      .datasources[0].uid;
    const exprs: string[] = [];
    for (const p of dash.panels.filter((q) => q.type !== 'row')) {
      expect(p.datasource?.uid).toBe(dsUid);
      exprs.push(...p.targets!.map((t) => t.expr));
    }
    const unknown = exprs.flatMap((e) => selectedMetrics(e)).filter((n) => !defined.has(n));
    expect(unknown).toEqual([]);
    const used = new Set(exprs.flatMap((e) => selectedMetrics(e)));
    for (const name of [
      'DCGM_FI_DEV_GPU_UTIL',
      'bullmq_job_count',
      'gpu_sidecar_jobs',
      'gpu_sidecar_job_run_seconds_bucket',
      'gpu_sidecar_job_wait_seconds_bucket',
      'tunnel_up',
    ])
      expect(used.has(name)).toBe(true);
  });

  it('compose mounts the rules and the dashboard in the monitoring profile', () => {
    const svc = (
      parse(read('../compose.yaml')) as { services: Record<string, { volumes: string[] }> }
    ).services;
    expect(svc.prometheus.volumes).toContain(
      './monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro',
    );
    const dashboards = parse(read('grafana-dashboards.yml')) as {
      providers: { options: { path: string } }[];
    };
    expect(svc.grafana.volumes).toContain(
      `./monitoring/grafana-dashboard.json:${dashboards.providers[0].options.path}/gpu-sidecar.json:ro`,
    );
    expect(svc.grafana.volumes).toContain(
      './monitoring/grafana-dashboards.yml:/etc/grafana/provisioning/dashboards/gpu-sidecar.yml:ro',
    );
  });
});
