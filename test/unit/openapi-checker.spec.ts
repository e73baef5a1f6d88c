import { OpenApiChecker, type Exchange } from '../support/openapi';

/**
 * The response checker that test/e2e/openapi.e2e-spec.ts runs over every answer of the built
 * worker: it must report what a response validator would refuse, or that test proves nothing.
 */
const doc = {
  openapi: '3.0.0',
  paths: {
    '/things/{id}': {
      get: {
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10 } },
          { name: 'follow', in: 'query', schema: { type: 'boolean' } },
        ],
        responses: {
          '200': {
            description: 'a thing',
            content: { 'application/json': { schema: { $ref: '#/components/schemas/Thing' } } },
          },
          '206': {
            description: 'part',
            headers: {
              'Content-Range': {
                required: true,
                schema: { type: 'string', pattern: '^bytes \\d+-\\d+/\\d+$' },
              },
            },
            content: {
              'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
            },
          },
          '204': { description: 'nothing' },
          '4XX': {
            description: 'refused',
            content: { 'application/json': { schema: { type: 'object' } } },
          },
        },
      },
    },
  },
  components: {
    schemas: {
      Thing: {
        type: 'object',
        required: ['id', 'when'],
        properties: {
          id: { type: 'string', format: 'uuid' },
          when: { type: 'string', format: 'date-time', nullable: true },
          state: { type: 'string', enum: ['a', 'b'], nullable: true },
        },
      },
    },
  },
};

const ID = '6f1c0d3e-8a47-4b1e-9c55-0d2a7b3c9e10';

function answer(status: number, type: string | undefined, body: unknown, more = {}): Exchange {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {
    method: 'GET',
    route: '/things/{id}',
    status,
    headers: { ...(type ? { 'content-type': type } : {}), ...more },
    body: Buffer.from(body === undefined ? '' : text),
  };
}

describe('OpenApiChecker', () => {
  const json = 'application/json; charset=utf-8';

  it('accepts an answer that matches, with nullable fields null or set', () => {
    const c = new OpenApiChecker(doc);
    expect(c.check(answer(200, json, { id: ID, when: null, state: null }))).toEqual([]);
    expect(
      c.check(answer(200, json, { id: ID, when: '2026-11-23T10:00:00.000Z', state: 'a' })),
    ).toEqual([]);
    expect(c.check(answer(204, undefined, undefined))).toEqual([]);
    expect([...c.seen]).toEqual(['GET /things/{id} 200', 'GET /things/{id} 204']);
  });

  it('reports an undeclared status, and matches 4XX ranges', () => {
    const c = new OpenApiChecker(doc);
    expect(c.check(answer(503, json, {}))[0]).toMatch(/status 503 is not declared/);
    expect(c.check(answer(404, json, {}))).toEqual([]);
    expect([...c.seen]).toEqual(['GET /things/{id} 4XX']);
    expect(c.check({ ...answer(200, json, {}), route: '/nope' })[0]).toMatch(/no such operation/);
  });

  it('reports a body that does not match: wrong type, missing field, undescribed field, bad format', () => {
    const c = new OpenApiChecker(doc);
    expect(c.check(answer(200, json, { id: ID, when: 5 })).join()).toMatch(
      /\/when must be string,null/,
    );
    expect(c.check(answer(200, json, { id: ID })).join()).toMatch(/must have required property/);
    expect(c.check(answer(200, json, { id: ID, when: null, extra: 1 })).join()).toMatch(
      /must NOT have additional properties \("extra"\)/,
    );
    expect(c.check(answer(200, json, { id: 'x', when: null })).join()).toMatch(
      /must match format "uuid"/,
    );
    expect(c.check(answer(200, json, { id: ID, when: null, state: 'c' })).join()).toMatch(
      /must be equal to one of the allowed values/,
    );
    expect(c.check(answer(200, json, 'not json')).join()).toMatch(/not JSON/);
  });

  it('reports an undeclared Content-Type, and a body where none is declared', () => {
    const c = new OpenApiChecker(doc);
    expect(c.check(answer(200, 'text/plain', 'hello'))[0]).toMatch(
      /Content-Type 'text\/plain' is not declared \(declared: application\/json\)/,
    );
    expect(c.check(answer(204, json, { a: 1 }))[0]).toMatch(/the document declares none/);
  });

  it('reports a required header missing or not matching its schema', () => {
    const c = new OpenApiChecker(doc);
    const bytes = 'application/octet-stream';
    expect(c.check(answer(206, bytes, 'abc', { 'content-range': 'bytes 0-2/9' }))).toEqual([]);
    expect(c.check(answer(206, bytes, 'abc'))[0]).toMatch(
      /required header Content-Range is missing/,
    );
    expect(c.check(answer(206, bytes, 'abc', { 'content-range': 'bytes */9' }))[0]).toMatch(
      /header Content-Range 'bytes \*\/9' .*must match pattern/,
    );
  });

  it('checks query parameters: undeclared names and values of the wrong type or range', () => {
    const c = new OpenApiChecker(doc);
    expect(c.checkQuery('GET', '/things/{id}', { limit: '3', follow: 'true' })).toEqual([]);
    expect(c.checkQuery('GET', '/things/{id}', { limit: 'abc' }).join()).toMatch(/must be integer/);
    expect(c.checkQuery('GET', '/things/{id}', { limit: '11' }).join()).toMatch(/must be <= 10/);
    expect(c.checkQuery('GET', '/things/{id}', { follow: '1' }).join()).toMatch(/must be boolean/);
    expect(c.checkQuery('GET', '/things/{id}', { other: '1' })[0]).toMatch(
      /'other' is not declared/,
    );
  });
});
