import { hostname } from 'node:os';
import { z } from 'zod';
import {
  parseDiskThreshold,
  parseDuration,
  parseGpuDevices,
  parseHostNames,
  parseHostPort,
  parseList,
  parseRedisUrl,
  parseSize,
  parseTargets,
  parseTunnelUrl,
  parseUidGid,
} from './parse';
import { redactUrl } from './redact';

/** The environment as handed to the daemons: process.env merged with the env file. */
export type Env = Record<string, string | undefined>;

/** Turns a throwing parser into a zod transform whose issue carries the parser's message. */
function via<T, I = string>(parse: (s: I) => T) {
  return (value: I, ctx: z.RefinementCtx): T => {
    try {
      return parse(value);
    } catch (err) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
      return z.NEVER;
    }
  };
}

const str = () => z.string({ required_error: 'is required' });
const opt = () => str().optional();
const def = (value: string) => str().default(value);
const intIn = (min: number, max: number, def: string) =>
  str()
    .default(def)
    .transform(
      via((s) => {
        if (!/^\d+$/.test(s.trim())) throw new Error(`expected a whole number, got '${s}'`);
        const n = Number(s);
        if (n < min || n > max) throw new Error(`must be between ${min} and ${max}, got ${n}`);
        return n;
      }),
    );
const urls = () =>
  opt().transform(via((s?: string) => (s === undefined ? [] : parseList(s).map(parseTunnelUrl))));
const hostPortOpt = () => opt().transform(via((s?: string) => (s ? parseHostPort(s) : undefined)));

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const QUEUE_UI_MODES = ['readonly', 'off', 'admin'] as const;

/** Variables both daemons read. */
const common = {
  TUNNEL_KEY_FILE: str().transform(
    via((s) => {
      const files = parseList(s);
      if (files.length === 0) throw new Error('is empty: give the path of a key file');
      return files;
    }),
  ),
  TUNNEL_LISTEN: hostPortOpt(),
  TUNNEL_CONNECT: urls(),
  TUNNEL_TLS_CERT: opt(),
  TUNNEL_TLS_KEY: opt(),
  HTTPS_PROXY: opt(),
  LOG_LEVEL: z
    .enum(LOG_LEVELS, { message: `must be one of ${LOG_LEVELS.join(', ')}` })
    .default('info'),
};

const relaySchema = z
  .object({
    ...common,
    RELAY_LISTEN: def('127.0.0.1:8001').transform(via(parseHostPort)),
    ADMIN_LISTEN: def('127.0.0.1:9464').transform(via(parseHostPort)),
    // More names ADMIN_LISTEN answers to, besides loopback and its host (DNS rebinding guard).
    ADMIN_HOSTS: def('').transform(via(parseHostNames)),
    // More local listeners, each relaying to a named worker target (TUNNEL_TARGETS there).
    RELAY_FORWARDS: opt().transform(via((s?: string) => parseTargets(s ?? ''))),
    // The forwards whose server speaks first (a banner): their streams open at the accept.
    RELAY_FORWARDS_SERVER_FIRST: def('').transform((s) => parseList(s)),
  })
  .superRefine((v, ctx) => {
    for (const name of v.RELAY_FORWARDS_SERVER_FIRST) {
      if (v.RELAY_FORWARDS[name]) continue;
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['RELAY_FORWARDS_SERVER_FIRST'],
        message: `'${name}' is not a name in RELAY_FORWARDS`,
      });
    }
    if (v.TUNNEL_CONNECT.length === 0 && !v.TUNNEL_LISTEN) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['TUNNEL_CONNECT'],
        message: 'is required: the ws:// URL of a worker (or set TUNNEL_LISTEN for reverse mode)',
      });
    }
  });

const workerSchema = z.object({
  ...common,
  API_LISTEN: def('127.0.0.1:8000').transform(via(parseHostPort)),
  // More names the API answers to, besides loopback and API_LISTEN's host (DNS rebinding guard).
  API_HOSTS: def('').transform(via(parseHostNames)),
  // The files of one submission together (POST /jobs, multipart); past it 413.
  MAX_UPLOAD: def('1GiB').transform(via(parseSize)),
  TUNNEL_TARGETS: opt().transform(via((s?: string) => parseTargets(s ?? ''))),
  REDIS_URL: opt().transform(
    via((s?: string) => {
      if (s === undefined) return undefined;
      // Parsed here too (the queue adapter parses it again), so a bad URL names REDIS_URL at start.
      parseRedisUrl(s);
      return s;
    }),
  ),
  DATA_FOLDER: def('./data'),
  EXPERIMENTS_DIR: def('./experiments'),
  GPU_DEVICES: def('all').transform(via(parseGpuDevices)),
  JOB_UID: opt().transform(via((s?: string) => (s === undefined ? undefined : parseUidGid(s)))),
  DOCKER_HOST: def('unix:///var/run/docker.sock'),
  WORKER_NAME: opt(),
  WORKER_CONCURRENCY: intIn(1, 1024, '1'),
  GPU_SLOTS_PER_DEVICE: intIn(1, 64, '1'),
  GPU_SAMPLE_INTERVAL: def('5s').transform(via(parseDuration)),
  // Containers, host, disk and Redis; unset: GPU_SAMPLE_INTERVAL, which drove them all before.
  HEALTH_SAMPLE_INTERVAL: opt().transform(
    via((s?: string) => (s === undefined ? undefined : parseDuration(s))),
  ),
  GPU_MAX_TEMP: intIn(30, 130, '90'),
  HEALTH_CONTAINERS: def('').transform((s) => parseList(s)),
  RESULTS_TTL: def('30d').transform(via(parseDuration)),
  MIN_FREE_DISK: def('5%').transform(via(parseDiskThreshold)),
  // The bull-board queue UI at /queues on API_LISTEN: readonly, off, or admin (retry/clean).
  QUEUE_UI: z
    .enum(QUEUE_UI_MODES, { message: `must be one of ${QUEUE_UI_MODES.join(', ')}` })
    .default('readonly'),
});

/** Raised when the environment does not validate; `issues` name each variable and the fix. */
export class ConfigError extends Error {
  /** One line per problem, each `VARIABLE: what is wrong`. */
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
  }

  /** The variables the issues are about (`REDIS_URL: ...` gives `REDIS_URL`), each once. */
  get variables(): string[] {
    return [...new Set(this.issues.map((i) => i.split(':')[0]))];
  }
}

function parseOrThrow<S extends z.ZodTypeAny>(schema: S, env: Env): z.output<S> {
  // Empty strings count as unset, as in a .env file with `VAR=`.
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ''),
  );
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map(
        (i: z.ZodIssue) => `${i.path.join('.') || 'environment'}: ${i.message}`,
      ),
    );
  }
  return result.data;
}

function tls(v: { TUNNEL_TLS_CERT?: string; TUNNEL_TLS_KEY?: string }) {
  if (!v.TUNNEL_TLS_CERT && !v.TUNNEL_TLS_KEY) return undefined;
  if (!v.TUNNEL_TLS_CERT || !v.TUNNEL_TLS_KEY) {
    throw new ConfigError(['TUNNEL_TLS_CERT and TUNNEL_TLS_KEY: set both or neither']);
  }
  return { certFile: v.TUNNEL_TLS_CERT, keyFile: v.TUNNEL_TLS_KEY };
}

export type RelayConfig = ReturnType<typeof loadRelayConfig>;
export type WorkerConfig = ReturnType<typeof loadWorkerConfig>;

/** Validates the relay's environment once; throws ConfigError naming each bad variable. */
export function loadRelayConfig(env: Env) {
  const v = parseOrThrow(relaySchema, env);
  return Object.freeze({
    daemon: 'relay' as const,
    keyFiles: v.TUNNEL_KEY_FILE,
    tunnelConnect: v.TUNNEL_CONNECT,
    tunnelListen: v.TUNNEL_LISTEN,
    relayListen: v.RELAY_LISTEN,
    relayForwards: v.RELAY_FORWARDS,
    relayForwardsServerFirst: v.RELAY_FORWARDS_SERVER_FIRST,
    adminListen: v.ADMIN_LISTEN,
    adminHosts: v.ADMIN_HOSTS,
    tls: tls(v),
    httpsProxy: v.HTTPS_PROXY,
    logLevel: v.LOG_LEVEL,
  });
}

/** Validates the worker's environment once; throws ConfigError naming each bad variable. */
export function loadWorkerConfig(env: Env) {
  const v = parseOrThrow(workerSchema, env);
  const reverse = v.TUNNEL_CONNECT.length > 0;
  return Object.freeze({
    daemon: 'worker' as const,
    keyFiles: v.TUNNEL_KEY_FILE,
    // Reverse mode (the worker dials) listens only when asked to; otherwise the default applies.
    tunnelListen: v.TUNNEL_LISTEN ?? (reverse ? undefined : parseHostPort('0.0.0.0:8080')),
    tunnelConnect: v.TUNNEL_CONNECT,
    tls: tls(v),
    httpsProxy: v.HTTPS_PROXY,
    logLevel: v.LOG_LEVEL,
    apiListen: v.API_LISTEN,
    apiHosts: v.API_HOSTS,
    maxUploadBytes: v.MAX_UPLOAD,
    tunnelTargets: v.TUNNEL_TARGETS,
    redisUrl: v.REDIS_URL,
    dataFolder: v.DATA_FOLDER,
    experimentsDir: v.EXPERIMENTS_DIR,
    gpuDevices: v.GPU_DEVICES,
    jobUser: v.JOB_UID ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() },
    dockerHost: v.DOCKER_HOST,
    workerName: v.WORKER_NAME ?? hostname(),
    workerConcurrency: v.WORKER_CONCURRENCY,
    gpuSlotsPerDevice: v.GPU_SLOTS_PER_DEVICE,
    gpuSampleIntervalMs: v.GPU_SAMPLE_INTERVAL,
    healthSampleIntervalMs: v.HEALTH_SAMPLE_INTERVAL ?? v.GPU_SAMPLE_INTERVAL,
    gpuMaxTemp: v.GPU_MAX_TEMP,
    healthContainers: v.HEALTH_CONTAINERS,
    resultsTtlMs: v.RESULTS_TTL,
    minFreeDisk: v.MIN_FREE_DISK,
    queueUi: v.QUEUE_UI,
  });
}

const keyFilesSchema = z.object({ TUNNEL_KEY_FILE: common.TUNNEL_KEY_FILE });

/**
 * TUNNEL_KEY_FILE alone, validated as at start (SIGHUP: the one variable a running daemon takes
 * again); throws ConfigError naming it. The other variables are not looked at.
 */
export function loadKeyFiles(env: Env): string[] {
  return parseOrThrow(keyFilesSchema, env).TUNNEL_KEY_FILE;
}

/** The configuration as safe to log: paths and addresses, never key material or passwords. */
export function describeConfig(config: RelayConfig | WorkerConfig): Record<string, unknown> {
  // Keys live in files; the config only holds their paths, so they are not secret. Every URL may
  // carry credentials (`user:pass@`, REDIS_URL's `?sentinelPassword=`): each is redacted. The
  // proxy URL is reduced to its host, as it always was.
  const out: Record<string, unknown> = { ...config };
  if (config.httpsProxy) {
    try {
      out.httpsProxy = new URL(config.httpsProxy).host;
    } catch {
      out.httpsProxy = '(set)';
    }
  }
  out.tunnelConnect = config.tunnelConnect.map(redactUrl);
  if ('redisUrl' in config && config.redisUrl) out.redisUrl = redactUrl(config.redisUrl);
  return out;
}
