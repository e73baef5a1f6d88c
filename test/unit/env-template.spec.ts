import { readFileSync } from 'node:fs';
import path from 'node:path';

// The configuration contract is the variable table of docs/ARCHITECTURE.md. .env.template
// documents every variable of it, and nothing else; a variable added to one and not the other
// fails here.
const root = path.join(__dirname, '..', '..');
const template = readFileSync(path.join(root, '.env.template'), 'utf8');
const documented = new Set([...template.matchAll(/^#?([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]));

const architecture = readFileSync(path.join(root, 'docs', 'ARCHITECTURE.md'), 'utf8');
const section = architecture.slice(
  architecture.indexOf('### Configuration'),
  architecture.indexOf('### Job API'),
);
/** First cells of the table's rows: `| TUNNEL_TLS_CERT, TUNNEL_TLS_KEY | ...`. */
const contract = section
  .split('\n')
  .filter((l) => /^\| [A-Z]/.test(l))
  .flatMap((l) => l.split('|')[1].split(','))
  .map((v) => v.trim())
  .filter((v) => /^[A-Z][A-Z0-9_]+$/.test(v));

describe('.env.template', () => {
  it('has a contract to compare with (docs/ARCHITECTURE.md, "Configuration")', () => {
    expect(contract).toContain('TUNNEL_KEY_FILE');
    expect(contract.length).toBeGreaterThan(20);
  });

  it('documents every variable of the configuration contract', () => {
    expect(contract.filter((v) => !documented.has(v))).toEqual([]);
  });

  it('documents nothing that is not in the contract', () => {
    expect([...documented].filter((v) => !contract.includes(v))).toEqual([]);
  });
});
