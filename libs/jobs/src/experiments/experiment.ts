import path from 'node:path';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { parseDuration } from '../../../config/src';
import { patternRisk } from './pattern-safety';

/** One installed experiment, as read from `EXPERIMENTS_DIR/<name>.yaml` (docs/EXPERIMENTS.md). */
export interface Experiment {
  name: string;
  runner: 'docker' | 'process';
  image?: string;
  command: string[];
  gpus: number;
  timeoutMs?: number;
  attempts: number;
  env: Record<string, string>;
  /** docker only: the container gets a network (`network: true`); none by default. */
  network?: boolean;
  /**
   * docker only: memory limit in bytes (`memory: 512m`), swap included, or `unlimited`; unset, the
   * Docker runner's default (90% of the host's memory).
   */
  memoryBytes?: number | 'unlimited';
  /** docker only: CPU limit in CPUs (`cpus: 1.5`). */
  cpus?: number;
  /** docker only: most processes and threads at once (`pids: 512`) or `unlimited`; default 4096. */
  pids?: number | 'unlimited';
  /** docker only: resource limits by name (`ulimits: { nofile: 1024 }`), -1 for unlimited. */
  ulimits?: Record<string, { soft: number; hard: number }>;
  /** docker only: size of the tmpfs mounted at /tmp (`tmp: 2g`); default 1 GiB. */
  tmpBytes?: number;
  /** docker only: `rootfs: writable`; the image's file system is read-only by default. */
  writableRootfs?: boolean;
  /** docker only: `user: root` lets the container run as uid 0; it never does by default. */
  runAsRoot?: boolean;
  /** Each GPU the job gets has at least this much memory, in bytes (`gpu_memory: 20GB`). */
  gpuMemoryBytes?: number;
  /** Each GPU the job gets is a MIG instance of this profile (`mig_profile: 3g.40gb`). */
  migProfile?: string;
  /** The JSON Schema that a job's params must satisfy. */
  params: Record<string, unknown>;
  /** The file it came from, for messages. */
  file: string;
}

/**
 * An experiment file that is wrong: names the file, the field and the problem. At start it stops
 * the worker; at a reload it is a warning and the version loaded before stays (catalog.ts).
 */
export class ExperimentFileError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`experiment file ${file}: ${field ? `${field} ` : ''}${problem}`);
    this.name = 'ExperimentFileError';
  }
}

/** `gpu_memory`: a size with its unit, `20GB`, `40GiB`, `512MiB` (decimal GB/MB, binary GiB/MiB). */
const GPU_MEMORY_PATTERN = '^[0-9]+(\\.[0-9]+)?\\s*([MGTmgt][iI]?[Bb])$';
/** `mig_profile`: a MIG profile as nvidia-smi -L prints it, `3g.40gb`, `1c.3g.71gb`, `1g.10gb+me`. */
const MIG_PROFILE_PATTERN = '^([0-9]+c\\.)?[0-9]+g\\.[0-9]+gb([+-][a-z]+)*$';

/**
 * What to write instead, for a value of the wrong shape or type (ajv alone would say `timeout must
 * be string` of `timeout: 30`, or quote a regular expression). A missing field still says
 * `is required`; an unknown one lists the fields there are.
 */
const FIELD_HINTS: Record<string, string> = {
  name: "must be lower-case letters, digits and '-' (64 at most), like train-small",
  image: 'must name an image on this host, like lab/train:1.4 (jobs never pull)',
  command:
    "must be a list of strings, like [python, train.py]: the program and its arguments, no shell (for one: [sh, -c, '...'])",
  timeout: 'must be a duration with its unit, like 30s, 5m or 2h',
  memory: 'must be a size like 512m or 2g, or unlimited',
  tmp: 'must be a size like 512m or 2g',
  user: 'must be root, or left out (the job then runs as JOB_UID, never as uid 0)',
  params: 'must be a JSON Schema object, like { type: object }',
  gpu_memory: 'must be a size with its unit, like 20GB or 40GiB',
  mig_profile: 'must be a MIG profile as nvidia-smi -L prints it, like 3g.40gb or 1g.10gb+me',
};

/** The hint for an error of the file's schema, when there is one for its field. */
function hintFor(e: ErrorObject, field: string): string | undefined {
  if (e.keyword === 'additionalProperties' && e.instancePath === '')
    return `is not a field of experiment files: use one of ${EXPERIMENT_FIELDS.join(', ')}`;
  if (e.keyword === 'required' || e.keyword === 'additionalProperties') return undefined;
  // Every variable's value is a string: `EPOCHS: 10` is a YAML number.
  if (field.startsWith('env.') && e.keyword === 'type')
    return "must be a string: quote it, like '10'";
  return FIELD_HINTS[field];
}

// The file's own shape, checked with the same ajv the params use.
const FILE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'runner', 'command', 'params'],
  properties: {
    name: { type: 'string', pattern: '^[a-z0-9-]+$', maxLength: 64 },
    runner: { enum: ['docker', 'process'] },
    image: { type: 'string', minLength: 1 },
    command: { type: 'array', minItems: 1, items: { type: 'string' } },
    gpus: { type: 'integer', minimum: 0, maximum: 64 },
    timeout: { type: 'string' },
    attempts: { type: 'integer', minimum: 1, maximum: 100 },
    env: { type: 'object', additionalProperties: { type: 'string' } },
    network: { type: 'boolean' },
    memory: { type: 'string' },
    cpus: { type: 'number', exclusiveMinimum: 0, maximum: 1024 },
    pids: { type: ['number', 'string'] },
    ulimits: { type: 'object' },
    tmp: { type: 'string' },
    rootfs: { enum: ['read-only', 'writable'] },
    user: { enum: ['root'] },
    gpu_memory: { type: 'string', pattern: GPU_MEMORY_PATTERN },
    mig_profile: { type: 'string', pattern: MIG_PROFILE_PATTERN },
    params: { type: 'object' },
  },
  if: { properties: { runner: { const: 'docker' } } },
  then: { required: ['image'] },
} as const;

/** Every top-level field an experiment file may hold (docs/EXPERIMENTS.md has one row each). */
export const EXPERIMENT_FIELDS: readonly string[] = Object.keys(FILE_SCHEMA.properties);

/** The fields every file must have (`image` too, for `runner: docker`). */
export const REQUIRED_EXPERIMENT_FIELDS: readonly string[] = FILE_SCHEMA.required;

/**
 * How a schema's `pattern` (and `patternProperties` key) becomes a RegExp. Why: a pattern with
 * nested quantifiers (`^(a+)+$`) backtracks for 2^n steps on a string of n characters that
 * almost matches, and params are checked on the event loop, so one such submission of 40
 * characters would freeze the worker (API, tunnel, jobs) for hours (27 took 2 s). The daemons run node with
 * `--enable-experimental-regexp-engine-on-excessive-backtracks` (bin/gpu-sidecar): a RegExp that
 * backtracks past V8's bound (50,000 backtracks) is re-run on V8's linear-time engine, which
 * answers the same. That engine takes no `u` flag (V8 11), and Ajv compiles every pattern with
 * it, so a pattern is compiled without it unless it needs it: `\p{...}`, `\P{...}`, `\u{...}` or
 * a character outside the Basic Multilingual Plane. Without `u`, `.` and a negated class match
 * one UTF-16 unit, so a character outside the BMP in the checked string counts as two
 * (docs/EXPERIMENTS.md, "Parameters"); such patterns keep `u` and have no linear fallback.
 * Patterns the linear engine cannot run, and `u` patterns that can backtrack exponentially,
 * are refused when the file is loaded (pattern-safety.ts).
 */
const NEEDS_UNICODE = /\\[pP]\{|\\u\{|[\uD800-\uDFFF]/;
export const patternRegExp = Object.assign(
  (pattern: string, u: string): RegExp => {
    const unicode = NEEDS_UNICODE.test(pattern);
    // Refused when the file is loaded (Ajv compiles every pattern then): patternRisk says why.
    const risk = patternRisk(pattern, unicode);
    if (risk)
      throw new Error(`pattern ${JSON.stringify(pattern)} could freeze the worker: ${risk}`);
    return new RegExp(pattern, unicode ? u : u.replace('u', ''));
  },
  { code: 'patternRegExp' },
);
function newAjv(): Ajv {
  const ajv = new Ajv({
    allErrors: false,
    strict: false,
    coerceTypes: false,
    code: { regExp: patternRegExp },
  });
  addFormats(ajv);
  return ajv;
}

/** `/epochs` → `params.epochs`; a missing property names itself. */
export function describeAjvError(e: ErrorObject, root: string): { field: string; problem: string } {
  const parts = e.instancePath.split('/').filter(Boolean);
  if (e.keyword === 'required') parts.push(String(e.params.missingProperty));
  if (e.keyword === 'additionalProperties') parts.push(String(e.params.additionalProperty));
  const field = [root, ...parts].filter(Boolean).join('.');
  const problem =
    e.keyword === 'required'
      ? 'is required'
      : e.keyword === 'additionalProperties'
        ? 'is not allowed'
        : e.keyword === 'enum'
          ? `must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`
          : (e.message ?? 'is invalid');
  return { field, problem };
}

/**
 * Compiles the experiment's params JSON Schema. Each experiment gets an Ajv of its own, so a
 * reloaded version (or another file) with the same `$id` never meets an older compiled schema.
 */
export function compileParams(exp: Experiment): ValidateFunction {
  try {
    return newAjv().compile(exp.params);
  } catch (err) {
    throw new ExperimentFileError(
      exp.file,
      'params',
      `is not a valid JSON Schema: ${(err as Error).message}`,
    );
  }
}

/** Parses and checks one experiment file's text. */
export function parseExperiment(file: string, text: string): Experiment {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw notYaml(file, (err as Error).message);
  }
  return experimentFrom(file, doc);
}

/** A file whose text the YAML parser refused, with the parser's words. */
export const notYaml = (file: string, why: string): ExperimentFileError =>
  new ExperimentFileError(file, '', `is not valid YAML: ${why}`);

/** Checks one experiment file's parsed YAML (the parsing may have been done elsewhere). */
export function experimentFrom(file: string, doc: unknown): Experiment {
  const validate = newAjv().compile(FILE_SCHEMA);
  if (!validate(doc)) {
    const error = validate.errors![0];
    const { field, problem } = describeAjvError(error, '');
    throw new ExperimentFileError(file, field || '(top level)', hintFor(error, field) ?? problem);
  }
  const d = doc as unknown as Record<string, unknown>;
  let timeoutMs: number | undefined;
  if (d.timeout !== undefined) {
    try {
      timeoutMs = parseDuration(d.timeout as string);
    } catch (err) {
      throw new ExperimentFileError(file, 'timeout', (err as Error).message);
    }
  }
  const dockerOnly = DOCKER_ONLY.find((k) => d[k] !== undefined);
  if (dockerOnly && d.runner !== 'docker') {
    // A limit the process runner cannot enforce is refused rather than silently ignored.
    throw new ExperimentFileError(file, dockerOnly, 'applies only to `runner: docker`');
  }
  const limits = containerLimits(file, d);
  const gpuSize = gpuSizeOf(file, d);
  const base = path.basename(file).replace(/\.ya?ml$/, '');
  if (d.name !== base) {
    throw new ExperimentFileError(file, 'name', `must match the file name '${base}'`);
  }
  return {
    name: d.name,
    runner: d.runner as 'docker' | 'process',
    image: d.image as string | undefined,
    command: d.command as string[],
    gpus: (d.gpus as number | undefined) ?? (gpuSize ? 1 : 0),
    timeoutMs,
    attempts: (d.attempts as number | undefined) ?? 1,
    env: (d.env as Record<string, string> | undefined) ?? {},
    network: (d.network as boolean | undefined) ?? false,
    ...limits,
    ...(d.cpus !== undefined ? { cpus: d.cpus as number } : {}),
    ...gpuSize,
    params: d.params as Record<string, unknown>,
    file,
  };
}

/** The fields only a container can enforce. */
const DOCKER_ONLY = ['network', 'memory', 'cpus', 'pids', 'ulimits', 'tmp', 'rootfs', 'user'];

/** The ulimit names Docker knows (`man setrlimit`, without the RLIMIT_ prefix). */
export const ULIMIT_NAMES = [
  'core',
  'cpu',
  'data',
  'fsize',
  'locks',
  'memlock',
  'msgqueue',
  'nice',
  'nofile',
  'nproc',
  'rss',
  'rtprio',
  'rttime',
  'sigpending',
  'stack',
];

type Limits = Pick<
  Experiment,
  'memoryBytes' | 'pids' | 'ulimits' | 'tmpBytes' | 'writableRootfs' | 'runAsRoot'
>;

/** The container's limits from the file, each checked with a message that says what to write. */
function containerLimits(file: string, d: Record<string, unknown>): Limits {
  const bad = (field: string, problem: string) => new ExperimentFileError(file, field, problem);
  const out: Limits = {};
  if (d.memory !== undefined) {
    const text = d.memory as string;
    if (text === 'unlimited') out.memoryBytes = 'unlimited';
    else {
      out.memoryBytes = sizeOf(text, () =>
        bad('memory', 'must be a size like 512m or 2g, or unlimited'),
      );
      // Docker refuses less than 6 MiB; say so at start rather than at the first job.
      if (out.memoryBytes < 6 * 1024 * 1024)
        throw bad('memory', 'must be at least 6m (Docker refuses less)');
    }
  }
  if (d.pids !== undefined) {
    const ok = d.pids === 'unlimited' || (Number.isInteger(d.pids) && (d.pids as number) >= 1);
    if (!ok || (d.pids as number) > 4194304)
      throw bad('pids', 'must be a whole number from 1 to 4194304, or unlimited');
    out.pids = d.pids as number | 'unlimited';
  }
  if (d.ulimits !== undefined) out.ulimits = ulimitsOf(d.ulimits as Record<string, unknown>, bad);
  if (d.tmp !== undefined) {
    out.tmpBytes = sizeOf(d.tmp as string, () => bad('tmp', 'must be a size like 512m or 2g'));
    if (out.tmpBytes < 1024 * 1024) throw bad('tmp', 'must be at least 1m');
  }
  if (d.rootfs === 'writable') out.writableRootfs = true;
  if (d.user === 'root') out.runAsRoot = true;
  return out;
}

function sizeOf(text: string, error: () => Error): number {
  try {
    return parseMemory(text);
  } catch {
    throw error();
  }
}

/** `nofile: 1024`, `memlock: unlimited`, `stack: { soft: 8m-in-bytes, hard: unlimited }`. */
function ulimitsOf(
  given: Record<string, unknown>,
  bad: (field: string, problem: string) => Error,
): Record<string, { soft: number; hard: number }> {
  const out: Record<string, { soft: number; hard: number }> = {};
  const value = (field: string, v: unknown): number => {
    if (v === 'unlimited') return -1;
    if (Number.isInteger(v) && (v as number) >= 0) return v as number;
    throw bad(field, 'must be a whole number of at least 0, or unlimited');
  };
  for (const [name, v] of Object.entries(given)) {
    const field = `ulimits.${name}`;
    if (!ULIMIT_NAMES.includes(name))
      throw bad(field, `is not a ulimit: use one of ${ULIMIT_NAMES.join(', ')}`);
    if (v !== null && typeof v === 'object') {
      const { soft, hard, ...rest } = v as Record<string, unknown>;
      const extra = Object.keys(rest)[0];
      if (extra !== undefined)
        throw bad(`${field}.${extra}`, 'is not allowed (soft and hard only)');
      const s = value(`${field}.soft`, soft);
      const h = value(`${field}.hard`, hard);
      if (h !== -1 && (s === -1 || s > h)) throw bad(field, 'soft must not be above hard');
      out[name] = { soft: s, hard: h };
    } else {
      const n = value(field, v);
      out[name] = { soft: n, hard: n };
    }
  }
  return out;
}

/**
 * `gpu_memory` and `mig_profile`: the size each of the job's GPUs must have. Either one alone
 * means one GPU (`gpus` left out); with `gpus: 0` they are refused (nothing to size).
 */
function gpuSizeOf(
  file: string,
  d: Record<string, unknown>,
): { gpuMemoryBytes?: number; migProfile?: string } | undefined {
  const field = ['gpu_memory', 'mig_profile'].find((k) => d[k] !== undefined);
  if (!field) return undefined;
  if (d.gpus === 0) throw new ExperimentFileError(file, field, 'needs gpus of 1 or more');
  return {
    ...(d.gpu_memory !== undefined
      ? { gpuMemoryBytes: parseGpuMemory(d.gpu_memory as string) }
      : {}),
    ...(d.mig_profile !== undefined ? { migProfile: d.mig_profile as string } : {}),
  };
}

const GPU_MEMORY_UNITS: Record<string, number> = {
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  MIB: 1024 ** 2,
  GIB: 1024 ** 3,
  TIB: 1024 ** 4,
};

/**
 * `gpu_memory` → bytes. GB is decimal (10^9), as NVIDIA names MIG profiles: `gpu_memory: 20GB`
 * fits a 2g.20gb instance (20096 MiB); GiB is binary. Profile names round (an H200's 1g.18gb has
 * 16384 MiB, under 18 GB): to ask for a profile, name it with mig_profile.
 */
export function parseGpuMemory(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([MGT]i?B)$/i.exec(text.trim());
  if (!m) throw new Error(`expected a size like 20GB or 40GiB, got '${text}'`);
  return Math.ceil(Number(m[1]) * GPU_MEMORY_UNITS[m[2].toUpperCase()]);
}

/** What an experiment asks of the GPUs of each of its jobs, for the allocator. */
export function gpuRequestOf(exp: Experiment): {
  count: number;
  memoryBytes?: number;
  migProfile?: string;
} {
  return {
    count: exp.gpus,
    ...(exp.gpuMemoryBytes !== undefined ? { memoryBytes: exp.gpuMemoryBytes } : {}),
    ...(exp.migProfile !== undefined ? { migProfile: exp.migProfile } : {}),
  };
}

/** The experiment's GPU request in its file's words: `1 GPU with mig_profile 3g.40gb`. */
export function describeGpuRequest(exp: Experiment): string {
  const size = [
    exp.migProfile !== undefined ? `mig_profile ${exp.migProfile}` : undefined,
    exp.gpuMemoryBytes !== undefined
      ? `gpu_memory ${Math.ceil(exp.gpuMemoryBytes / 1024 ** 2)} MiB or more`
      : undefined,
  ].filter(Boolean);
  return `${exp.gpus} GPU(s)${size.length ? ` with ${size.join(' and ')}` : ''}`;
}

const MEMORY_UNITS: Record<string, number> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** Docker's memory notation (`512m`, `2g`, `1.5g`, bytes without a unit) → bytes. */
export function parseMemory(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkmg]?)$/i.exec(text.trim());
  if (!m) throw new Error(`expected a size like 512m or 2g, got '${text}'`);
  return Math.floor(Number(m[1]) * MEMORY_UNITS[(m[2] || 'b').toLowerCase()]);
}
