/**
 * Error codes that mean the Docker Engine could not be reached at DOCKER_HOST (no socket, no
 * permission on it, refused, reset, broken pipe, timed out, no route to a tcp:// host), as
 * opposed to an engine that answered with an error. The one list: the container probe
 * (libs/health) reports these as `unreachable` and the Docker runner (libs/jobs) lets a job wait
 * without using a try.
 */
export const DOCKER_UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  'ENOENT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EACCES',
  'ETIMEDOUT',
  'EHOSTUNREACH',
]);

/** Whether a Docker call failed because the engine could not be reached (the codes above). */
export const isDockerUnreachable = (err: unknown): boolean =>
  DOCKER_UNREACHABLE_CODES.has((err as { code?: string } | null | undefined)?.code ?? '');

/**
 * The HTTP status the engine answered a failed call with: 404 no such container or image, 409
 * a conflict (the name is taken, the container is not running, its removal is under way).
 */
export const dockerStatusCode = (err: unknown): number | undefined =>
  (err as { statusCode?: number } | null | undefined)?.statusCode;

/** Whether the engine said there is no such container or image (404). */
export const isNotFound = (err: unknown): boolean => dockerStatusCode(err) === 404;

/** What the engine said (its JSON `message`), else the error's own message. */
export const dockerMessage = (err: unknown): string =>
  (err as { json?: { message?: string } }).json?.message ?? (err as Error).message ?? String(err);

/** What `call` gives, or undefined when the engine says there is no such object (404). */
export async function unlessNotFound<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Waits for a kill or a removal; the container being gone (404) or not in a state for it (409:
 * not running, removal already in progress) is not an error.
 */
export async function unlessGoneOrBusy(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (err) {
    const status = dockerStatusCode(err);
    if (status !== 404 && status !== 409) throw err;
  }
}
