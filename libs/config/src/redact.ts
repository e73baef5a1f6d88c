/**
 * Secrets that travel inside URLs (REDIS_URL's password and `sentinelPassword`, a proxy's or a
 * tunnel URL's `user:pass@`, a `?token=`) hidden before a URL is logged, served (/health) or put
 * into an error message.
 */

/** Query parameters whose value is taken for a secret: any name containing one of these words. */
const SECRET_PARAM = /pass|secret|token|key|auth|cred|sig/i;

/**
 * `scheme://userinfo@`: everything up to the last `@` before the path (a raw `@` in a password).
 * `?` and `#` do not end it: REDIS_URL's parser takes any character but `@` and `/` into the
 * password, so neither may this (a password `ab?cd` would otherwise be shown as a query).
 */
const USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)([^/]*)@/i;

/** One `name=value` of a query string (`?` or `&` or `;` before it), up to the next separator. */
const QUERY_PARAM = /([?&;])([^=&#;]*)=([^&#;]*)/g;

/**
 * `url` with its secrets replaced by `***`: the password of `user:password@` (a lone
 * `token@`, with no colon, is all secret), and the value of every query parameter whose name
 * looks like a secret (`password`, `sentinelPassword`, `token`, `api_key`, `auth`, ...).
 * Host, port, path and the other parameters stay, so the line still says where it points.
 * Works on text that WHATWG URL cannot parse (Sentinel's `host1,host2` list) and never throws:
 * a string that is not a URL comes back unchanged but for the same replacements.
 *
 * Why this is enough: a secret in a URL can only sit in the userinfo or in the query; both
 * are matched by position, not by guessing at the value, and the userinfo match runs to the
 * last `@` of the authority, so a password holding a raw `@` or `:` is still hidden whole.
 */
export function redactUrl(url: string): string {
  const withoutUserinfo = url.replace(USERINFO, (_all, scheme: string, info: string) => {
    const colon = info.indexOf(':');
    return colon < 0 ? `${scheme}***@` : `${scheme}${info.slice(0, colon)}:***@`;
  });
  const q = withoutUserinfo.search(/[?#]/);
  if (q < 0 || withoutUserinfo[q] === '#') return withoutUserinfo;
  const head = withoutUserinfo.slice(0, q);
  const query = withoutUserinfo
    .slice(q)
    .replace(QUERY_PARAM, (all, sep: string, name: string) =>
      SECRET_PARAM.test(decodeSafely(name)) ? `${sep}${name}=***` : all,
    );
  return head + query;
}

function decodeSafely(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
