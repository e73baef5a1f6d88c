import { MAX_PARAMS_DEPTH, nestingDepth } from './jobs.service';

/** `levels` arrays, one inside the other, as JSON.parse would give them. */
const nested = (levels: number): unknown =>
  JSON.parse(`${'['.repeat(levels)}${']'.repeat(levels)}`);

describe('nestingDepth', () => {
  it.each([
    [1, 0],
    ['text', 0],
    [null, 0],
    [{}, 1],
    [[], 1],
    [{ a: 1, b: [1, 2] }, 2],
    [{ a: { b: { c: [{ d: 1 }] } } }, 5],
  ])('%j is %d deep', (value, depth) => expect(nestingDepth(value, MAX_PARAMS_DEPTH)).toBe(depth));

  it('counts the deepest branch, not the first one', () => {
    expect(nestingDepth({ shallow: 1, deep: nested(10) }, MAX_PARAMS_DEPTH)).toBe(11);
  });

  it('stops one level past the limit, without recursion, on 45,000 levels', () => {
    expect(nestingDepth(nested(45_000), MAX_PARAMS_DEPTH)).toBe(MAX_PARAMS_DEPTH + 1);
    expect(nestingDepth(nested(MAX_PARAMS_DEPTH), MAX_PARAMS_DEPTH)).toBe(MAX_PARAMS_DEPTH);
  });
});
