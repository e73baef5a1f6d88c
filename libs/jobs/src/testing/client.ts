/* eslint-disable @typescript-eslint/no-explicit-any -- a test client: replies are JSON of any shape */
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';

/** A small client of the job API for tests and the bench: plain fetch, nothing hidden. */
export interface ApiReply<T = any> {
  status: number;
  body: T;
}

/**
 * Experiments used by the tests, written into a temp EXPERIMENTS_DIR. `sleepy` appends its job id
 * to `ranLog` when it completes, so a test can count how many times each job really ran.
 */
export const testExperiments = (
  ranLog = '/dev/null',
  sleepSeconds = 30,
): Record<string, string> => ({
  'hello.yaml': `name: hello
runner: process
command: ["sh", "-c", "for i in 1 2 3; do echo \\"::progress:: $((i * 33)) step $i\\"; sleep 0.1; done; echo \\"Hello, $(cat $JOB_PARAMS)\\" > $JOB_OUTPUT/hello.txt; ln -s /etc/passwd $JOB_OUTPUT/passwd"]
params:
  type: object
  properties: { name: { type: string, minLength: 1 } }
  required: [name]
`,
  'sleepy.yaml': `name: sleepy
runner: process
command: ["sh", "-c", "echo started; sleep $SECONDS_TO_SLEEP; echo $JOB_ID >> $RAN_LOG"]
attempts: 2
env: { SECONDS_TO_SLEEP: "${sleepSeconds}", RAN_LOG: "${ranLog}" }
params: { type: object }
`,
  'once.yaml': `name: once
runner: process
command: ["sh", "-c", "echo started; sleep 30"]
attempts: 1
params: { type: object }
`,
  'quick.yaml': `name: quick
runner: process
command: ["true"]
params: { type: object }
`,
  'slow-timeout.yaml': `name: slow-timeout
runner: process
command: ["sh", "-c", "echo started; sleep 30"]
timeout: 500ms
params: { type: object }
`,
  'flaky.yaml': `name: flaky
runner: process
command: ["sh", "-c", "echo try; exit 7"]
attempts: 2
params: { type: object }
`,
  'gpu-probe.yaml': `name: gpu-probe
runner: process
command: ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES > $JOB_OUTPUT/gpu.txt; sleep 0.5; exit $(cat $JOB_PARAMS | grep -c fail)"]
gpus: 1
params: { type: object }
`,
  'copy-input.yaml': `name: copy-input
runner: process
command: ["sh", "-c", "cp -r input/. output/"]
params: { type: object }
`,
});

/** Writes the test experiments into `dir`. */
export function writeTestExperiments(dir: string, ranLog?: string, sleepSeconds?: number): void {
  for (const [name, text] of Object.entries(testExperiments(ranLog, sleepSeconds))) {
    writeFileSync(join(dir, name), text);
  }
}

export class JobsClient {
  constructor(readonly base: string) {}

  async call<T = any>(method: string, path: string, body?: unknown): Promise<ApiReply<T>> {
    const res = await fetch(this.base + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* plain text */
    }
    return { status: res.status, body: parsed as T };
  }

  async submit(
    experiment: string,
    params: unknown = {},
    extra: Record<string, unknown> = {},
  ): Promise<string> {
    const r = await this.call('POST', '/jobs', { experiment, params, ...extra });
    if (r.status !== 201) throw new Error(`submit answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.id as string;
  }

  async job(id: string): Promise<any> {
    return (await this.call('GET', `/jobs/${id}`)).body;
  }

  /** Polls until the job is in one of `states`; rejects after `timeoutMs` with its last record. */
  async waitFor(id: string, states: string[], timeoutMs = 30_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rec = await this.job(id);
      if (states.includes(rec.state)) return rec;
      if (Date.now() > deadline) throw new Error(`job ${id} still ${JSON.stringify(rec)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Reads `GET /jobs/:id/events` until the server ends it; returns every event. */
  async events(id: string): Promise<{ event: string; data: any }[]> {
    const res = await fetch(`${this.base}/jobs/${id}/events`);
    const out: { event: string; data: any }[] = [];
    const text = await res.text();
    for (const block of text.split('\n\n')) {
      const ev = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (ev && data) out.push({ event: ev, data: JSON.parse(data) });
    }
    return out;
  }
}

/** GET with the path sent exactly as given (fetch would normalize `..` away). */
export function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
