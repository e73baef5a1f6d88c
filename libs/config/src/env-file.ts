import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'dotenv';
import type { Env } from './env';

/**
 * Reads the environment the way the daemons see it: the env file's variables under the
 * process's own (a variable set in the shell or by systemd wins over the file, as with dotenv).
 * `file` undefined means `.env` in the working directory when present.
 */
export function readEnvironment(processEnv: Env, file?: string): Env {
  const path = file ?? '.env';
  if (file !== undefined && !existsSync(path)) {
    throw new Error(`--env-file ${path}: no such file`);
  }
  const fromFile = existsSync(path) ? parse(readFileSync(path)) : {};
  return { ...fromFile, ...processEnv };
}
