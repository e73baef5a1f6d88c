/**
 * Why a params `pattern` could still freeze the worker's event loop, or undefined if it cannot.
 *
 * The daemons re-run any regular expression past V8's backtrack bound on V8's linear-time
 * engine (bin/gpu-sidecar), which makes nested quantifiers harmless. That engine cannot run
 * every pattern, and those it cannot run keep backtracking for as long as it takes (measured
 * with the flag on, 28 characters: `^(?=(a+)+$)` 10.8 s, `^(a|a)+(?<=a)$` 19.1 s,
 * `^(\p{L}+)+$` 10.5 s; each more character doubles it):
 * - lookarounds `(?=`, `(?!`, `(?<=`, `(?<!` and backreferences `\1`..`\9`, `\k<name>`;
 * - a pattern compiled with the `u` flag (patternRegExp: `\p{}`, `\P{}`, `\u{}`, astral
 *   characters): the engine takes no `u` in this V8. Such a pattern is refused only when it
 *   can backtrack exponentially: a quantifier on a group that holds a quantifier or an
 *   alternation (`(a+)+`, `(a|ab)*`); one without (`^\p{L}+$`) backtracks at most
 *   polynomially, on strings as long as the schema lets through.
 *
 * A scanner, not a full parser: it tracks escapes, character classes and groups, which is
 * all these rules need, and errs on the side of refusing (a `(?=` is refused even where a
 * different reading could call it literal, which JavaScript's grammar never does).
 */
export function patternRisk(pattern: string, unicode: boolean): string | undefined {
  /** Per open group: whether it holds a quantifier or an alternation. */
  const groups: { risky: boolean }[] = [{ risky: false }];
  let inClass = false;
  /** The group that just closed (what a following quantifier would apply to). */
  let closed: { risky: boolean } | undefined;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    const top = groups[groups.length - 1];
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if (!inClass && (/[1-9]/.test(next) || next === 'k'))
        return `it uses a backreference (\\${next}...), which V8's linear-time engine cannot run`;
      i++;
      closed = undefined;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    const quantifier =
      c === '*' ||
      c === '+' ||
      c === '?' ||
      (c === '{' && /^\{\d+(,\d*)?\}/.test(pattern.slice(i)));
    if (quantifier) {
      // A `?` right after another quantifier is its lazy form, not a quantifier of its own.
      if (unicode && closed?.risky)
        return 'it has a quantified group that holds a quantifier or an alternation, and it needs the `u` flag, with which V8 has no linear-time fallback';
      top.risky = true;
      closed = undefined;
      if (c === '{') i = pattern.indexOf('}', i);
      continue;
    }
    closed = undefined;
    if (c === '[') inClass = true;
    else if (c === '|') top.risky = true;
    else if (c === '(') {
      if (/^\(\?<?[=!]/.test(pattern.slice(i)))
        return "it uses a lookaround ((?=, (?!, (?<=, (?<!), which V8's linear-time engine cannot run";
      groups.push({ risky: false });
      // `(?:` and `(?<name>`: the `?` opens the group's kind, it is no quantifier.
      const kind = /^\(\?(:|<[^>]*>)/.exec(pattern.slice(i));
      if (kind) i += kind[0].length - 1;
    } else if (c === ')' && groups.length > 1) {
      const group = groups.pop()!;
      closed = group;
      if (group.risky) groups[groups.length - 1].risky = true;
    }
  }
  return undefined;
}
