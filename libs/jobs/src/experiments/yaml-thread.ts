import { Worker } from 'node:worker_threads';

/** How long one file may take to parse before it is given up (a real one takes a few ms). */
export const YAML_PARSE_LIMIT_MS = 2_000;

/** The heap one parse may use: past it the thread dies, the worker does not. */
export const YAML_PARSE_HEAP_MB = 256;

// The thread's code, as text (eval): the same from dist/ and from the TypeScript sources under
// jest. `yaml` is required by its resolved path, so the daemon's working folder does not matter.
const PARSER = `
const { parentPort } = require('node:worker_threads');
const { parse } = require(${JSON.stringify(require.resolve('yaml'))});
parentPort.on('message', (text) => {
  let reply;
  try {
    reply = { doc: parse(text) };
  } catch (err) {
    reply = { error: String((err && err.message) || err) };
  }
  parentPort.postMessage(reply);
});
`;

/** A parse's result: the document, or the parser's (or the bound's) words. */
export type YamlResult = { doc: unknown } | { error: string; notYaml: boolean };

/**
 * Parses experiment files' YAML in a worker thread, one text at a time, each within
 * YAML_PARSE_LIMIT_MS and YAML_PARSE_HEAP_MB. Why: the parser is synchronous and some inputs cost it
 * far more than their size (1 MiB of distinct keys in one map: 55 s here; 1 MiB of `[`: 4 s), so
 * a reading in the daemon's own thread could freeze the API, the tunnel's pings and every job's
 * log while a file is copied into EXPERIMENTS_DIR. Here a slow or huge parse costs a thread, which
 * is ended; the daemon goes on. The document comes back by structured clone (plain data; alias
 * cycles included, which the checks after refuse).
 */
/** How long a new parser thread may take to start before its parse is given up. */
const THREAD_START_MS = 30_000;

export class YamlThread {
  private worker?: Worker;
  /** Threads that are running (their 'online' came): a parse's bound starts at once on these. */
  private readonly online = new WeakSet<Worker>();
  /** Threads being ended: close() waits for them. */
  private ending: Promise<number>[] = [];

  constructor(
    private readonly limitMs = YAML_PARSE_LIMIT_MS,
    private readonly heapMb = YAML_PARSE_HEAP_MB,
  ) {}

  parse(text: string): Promise<YamlResult> {
    const w = (this.worker ??= this.start());
    return new Promise<YamlResult>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (result: YamlResult, stop: boolean) => {
        clearTimeout(timer);
        w.off('online', arm);
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        if (stop) {
          if (this.worker === w) this.worker = undefined;
          this.ending.push(w.terminate());
        }
        resolve(result);
      };
      const onMessage = (m: { doc?: unknown; error?: string }) =>
        finish(m.error !== undefined ? { error: m.error, notYaml: true } : { doc: m.doc }, false);
      const onError = (err: Error) =>
        finish({ error: `could not be parsed: ${err.message}`, notYaml: false }, true);
      const onExit = (code: number) =>
        finish(
          { error: `could not be parsed: the parser stopped (${code})`, notYaml: false },
          true,
        );
      const giveUp = (error: string) => () => finish({ error, notYaml: false }, true);
      // The bound is the parse's: it starts once the thread runs. Starting a thread takes tens
      // of milliseconds on a loaded machine, which would otherwise count against a short bound
      // (a new thread's first parse failed a 0.1 s bound so); a thread that never starts is
      // given up after THREAD_START_MS.
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(
          giveUp(`took more than ${this.limitMs / 1000} s to parse: make it smaller or simpler`),
          this.limitMs,
        );
      };
      if (this.online.has(w)) arm();
      else {
        timer = setTimeout(
          giveUp('could not be parsed: the parser did not start'),
          THREAD_START_MS,
        );
        w.once('online', arm);
      }
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      w.postMessage(text);
    });
  }

  private start(): Worker {
    const w = new Worker(PARSER, {
      eval: true,
      resourceLimits: { maxOldGenerationSizeMb: this.heapMb },
    });
    // Always one listener: a thread given up (past its bound) may still report its end as an
    // 'error' (ERR_WORKER_OUT_OF_MEMORY) after its parse's own listeners are gone, and an
    // 'error' nobody listens to would end the worker daemon itself.
    w.on('error', () => undefined);
    w.once('online', () => this.online.add(w));
    w.unref();
    return w;
  }

  /** Ends the thread (it is unref'd too: it never keeps the process alive); resolves once ended. */
  async close(): Promise<void> {
    if (this.worker) this.ending.push(this.worker.terminate());
    this.worker = undefined;
    await Promise.allSettled(this.ending.splice(0));
  }
}
