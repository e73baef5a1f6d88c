/* eslint-disable @typescript-eslint/no-explicit-any -- an OpenAPI document is JSON of any shape */
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

/**
 * Checks real HTTP answers against an OpenAPI 3.0 document, as a response validator in a client
 * or a gateway would: the status must be declared for the operation, the Content-Type must be
 * one the response declares, the body must match its schema, and every header the response
 * marks `required` must be present and match. Schemas are checked with ajv (OpenAPI 3.0's
 * schema is a JSON Schema subset: `nullable` is translated, `format: binary` accepted).
 *
 * Stricter than the document on one point, on purpose: an object schema that lists
 * `properties` and says nothing of `additionalProperties` is checked as closed, so a field an
 * answer carries that the document does not describe is reported (the document itself stays
 * open, so that clients accept fields added later).
 */
export class OpenApiChecker {
  private readonly ajv = new Ajv({ strict: false, allErrors: true });
  private readonly compiled = new Map<unknown, ValidateFunction>();
  /** `METHOD /route STATUS` of every declared answer checked so far. */
  readonly seen = new Set<string>();

  constructor(readonly doc: any) {
    addFormats(this.ajv);
    this.ajv.addFormat('binary', true);
    this.ajv.addSchema({ $id: 'doc', components: toJsonSchema(doc.components ?? {}) });
  }

  /** Every answer the document declares, as `METHOD /route STATUS`. */
  declared(): string[] {
    const out: string[] = [];
    for (const [route, item] of Object.entries<any>(this.doc.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        for (const status of Object.keys(op.responses ?? {})) {
          out.push(`${method.toUpperCase()} ${route} ${status}`);
        }
      }
    }
    return out.sort();
  }

  /** The operation at `route` (the document's template, `/jobs/{id}`) for `method`. */
  operation(method: string, route: string): any {
    const m = method.toLowerCase() === 'head' ? 'get' : method.toLowerCase();
    return this.doc.paths[route]?.[m];
  }

  /** What is wrong with this answer according to the document; empty when it matches. */
  check(x: Exchange): string[] {
    const where = `${x.method} ${x.route} → ${x.status}`;
    const op = this.operation(x.method, x.route);
    if (!op) return [`${where}: the document has no such operation`];
    const key = [String(x.status), `${String(x.status)[0]}XX`, 'default'].find(
      (k) => op.responses?.[k],
    );
    if (!key) {
      return [
        `${where}: status ${x.status} is not declared (declared: ${Object.keys(op.responses ?? {}).join(', ')})`,
      ];
    }
    const res = op.responses[key];
    this.seen.add(`${x.method === 'HEAD' ? 'GET' : x.method} ${x.route} ${key}`);
    const problems: string[] = [];
    for (const [name, h] of Object.entries<any>(res.headers ?? {})) {
      const value = x.headers[name.toLowerCase()];
      if (value === undefined) {
        if (h.required) problems.push(`${where}: required header ${name} is missing`);
        continue;
      }
      const v = h.schema?.type === 'integer' || h.schema?.type === 'number' ? Number(value) : value;
      for (const p of this.validate(h.schema ?? {}, v)) {
        problems.push(`${where}: header ${name} '${String(value)}' ${p}`);
      }
    }
    const type = String(x.headers['content-type'] ?? '')
      .split(';')[0]
      .trim()
      .toLowerCase();
    if (!res.content) {
      if (x.body.length > 0 && x.method !== 'HEAD') {
        problems.push(`${where}: has a ${type || 'typeless'} body; the document declares none`);
      }
      return problems;
    }
    const media = Object.entries<any>(res.content).find(
      ([k]) => k.split(';')[0].trim().toLowerCase() === type,
    );
    if (!media) {
      problems.push(
        `${where}: Content-Type '${type}' is not declared (declared: ${Object.keys(res.content).join(', ')})`,
      );
      return problems;
    }
    if (x.method === 'HEAD' || !media[1].schema) return problems;
    let value: unknown = x.body.toString('utf8');
    if (type === 'application/json' || type.endsWith('+json')) {
      try {
        value = JSON.parse(value as string);
      } catch {
        return [...problems, `${where}: the body is not JSON: ${(value as string).slice(0, 200)}`];
      }
    }
    for (const p of this.validate(media[1].schema, value)) problems.push(`${where}: body ${p}`);
    return problems;
  }

  /** What is wrong with a request's query: names not declared, values that do not match. */
  checkQuery(method: string, route: string, query: Record<string, string>): string[] {
    const params = (this.operation(method, route)?.parameters ?? []).filter(
      (p: any) => p.in === 'query',
    );
    const problems: string[] = [];
    for (const [name, raw] of Object.entries(query)) {
      const p = params.find((q: any) => q.name === name);
      if (!p) {
        problems.push(`${method} ${route}: query parameter '${name}' is not declared`);
        continue;
      }
      const t = p.schema?.type;
      const v =
        t === 'integer' || t === 'number'
          ? Number(raw)
          : t === 'boolean'
            ? raw === 'true'
              ? true
              : raw === 'false'
                ? false
                : raw
            : raw;
      for (const e of this.validate(p.schema ?? {}, v)) {
        problems.push(`${method} ${route}: query ${name}=${raw} ${e}`);
      }
    }
    return problems;
  }

  /** What is wrong with `value` against `schema` (a schema of the document, or `{$ref}` to one). */
  validate(schema: unknown, value: unknown): string[] {
    let fn = this.compiled.get(schema);
    if (!fn) {
      fn = this.ajv.compile(toJsonSchema(schema) as object);
      this.compiled.set(schema, fn);
    }
    if (fn(value)) return [];
    return (fn.errors ?? []).map(
      (e) => `${e.instancePath || '(root)'} ${e.message}${paramsText(e.params)}`,
    );
  }

  /** `validate` against `#/components/schemas/<name>`. */
  validateComponent(name: string, value: unknown): string[] {
    return this.validate({ $ref: `#/components/schemas/${name}` }, value);
  }
}

/** One HTTP exchange: the request's method and the document's route for it, and the answer. */
export interface Exchange {
  method: string;
  route: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function paramsText(params: Record<string, unknown>): string {
  const extra = params.additionalProperty ?? params.allowedValues ?? params.missingProperty;
  return extra === undefined ? '' : ` (${JSON.stringify(extra)})`;
}

/**
 * An OpenAPI 3.0 schema (or any part of the document holding schemas) as JSON Schema for ajv:
 * `nullable: true` becomes a `null` type, references point into the `doc` schema registered
 * above, and object schemas with properties are closed (see OpenApiChecker).
 */
export function toJsonSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(toJsonSchema);
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = toJsonSchema(v);
  if (typeof out.$ref === 'string' && out.$ref.startsWith('#/components/')) {
    out.$ref = `doc${out.$ref}`;
  }
  if (out.properties && typeof out.properties === 'object' && !('additionalProperties' in out)) {
    out.additionalProperties = false;
  }
  if (out.nullable === true) {
    delete out.nullable;
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
    if (out.type === undefined) return { anyOf: [out, { type: 'null' }] };
  }
  return out;
}
