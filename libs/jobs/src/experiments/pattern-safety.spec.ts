import { patternRisk } from './pattern-safety';

describe('patternRisk: params patterns that could freeze the worker', () => {
  it.each([
    ['^(?=(a+)+$)', 'lookaround'],
    ['^(?!x)a$', 'lookaround'],
    ['^(a|a)+(?<=a)$', 'lookaround'],
    ['(?<!b)c', 'lookaround'],
    ['^(a+)+\\1$', 'backreference'],
    ['^(?<x>a)\\k<x>$', 'backreference'],
  ])('refuses %s (%s), with or without u', (pattern, what) => {
    expect(patternRisk(pattern, false)).toMatch(what);
    expect(patternRisk(pattern, true)).toBeDefined();
  });

  it.each(['^(\\p{L}+)+$', '^(\\p{L}|a)*$', '^((?:\\p{L}\\d?)+)$', '^(\\p{L}{1,3})+$'])(
    'refuses %s with u: a quantified group holding a quantifier or an alternation',
    (pattern) => {
      expect(patternRisk(pattern, true)).toMatch(/quantified group/);
    },
  );

  it.each([
    '^[a-z0-9_-]{1,64}$',
    '^(a+)+$', // without u: the linear-time engine takes over past the backtrack bound
    '^(?:foo|bar)$',
    '^(?<year>\\d{4})-(?<month>\\d{2})$',
    '^[(?=)\\1]+$', // inside a class these are plain characters
    '\\(\\?=', // escaped: literal
    'a+?b*?',
  ])('accepts %s without u', (pattern) => {
    expect(patternRisk(pattern, false)).toBeUndefined();
  });

  it.each([
    '^\\p{L}+$',
    '^(?:\\p{Lu}\\p{Ll}*)$',
    '^(\\p{L})+$',
    '^(?:\\p{L}){2,5}$',
    '^[\\p{L} ]{1,50}$',
  ])('accepts %s with u: no quantifier or alternation under a quantifier', (pattern) => {
    expect(patternRisk(pattern, true)).toBeUndefined();
  });
});
