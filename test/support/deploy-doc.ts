import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './daemon';

/** The commands of docs/DEPLOY.md's procedures, so a test runs what the document says. */
const DOC = path.join(ROOT, 'docs', 'DEPLOY.md');

/**
 * The commands of the ```sh block number `index` (0: the first) after the heading `section`
 * and then, inside it, the heading `sub` (e.g. "GPU host from nothing", "systemd"): one per
 * line, blank lines and comment lines left out. Throws when the document has no such block.
 */
export function procedure(section: string, sub?: string, index = 0): string[] {
  const text = readFileSync(DOC, 'utf8');
  let at = text.indexOf(`\n## ${section}\n`);
  if (at < 0) throw new Error(`docs/DEPLOY.md has no section "## ${section}"`);
  if (sub !== undefined) {
    at = text.indexOf(`\n### ${sub}\n`, at);
    if (at < 0) throw new Error(`docs/DEPLOY.md has no "### ${sub}" under "## ${section}"`);
  }
  let open = text.indexOf('```sh\n', at);
  for (let i = 0; i < index && open >= 0; i++) open = text.indexOf('```sh\n', open + 6);
  const close = text.indexOf('\n```', open + 6);
  const next = text.indexOf('\n## ', at + 1);
  if (next >= 0 && open > next) throw new Error(`no sh block ${index} in "${section}"`);
  if (open < 0 || close < 0) throw new Error(`no sh block after "${section}" / "${sub}"`);
  return text
    .slice(open + 6, close)
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
}

/** What step 1 of the systemd procedures says: clone, install dependencies, build. */
export const SYSTEMD_STEP_1 =
  'sudo git clone https://github.com/LAB/gpu-sidecar /opt/gpu-sidecar && cd /opt/gpu-sidecar && sudo npm ci && sudo npm run build';
