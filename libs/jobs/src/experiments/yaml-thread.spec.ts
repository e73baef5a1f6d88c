import { YamlThread } from './yaml-thread';

/** YAML that costs the parser far more than its size: many distinct keys in one map. */
const slowYaml = (keys: number) => Array.from({ length: keys }, (_, i) => `k${i}: ${i}`).join('\n');

describe('YamlThread', () => {
  const threads: YamlThread[] = [];
  const thread = (limitMs?: number, heapMb?: number) => {
    const t = new YamlThread(limitMs, heapMb);
    threads.push(t);
    return t;
  };
  afterEach(async () => {
    await Promise.all(threads.splice(0).map((t) => t.close()));
  });

  it('gives back the document, alias cycles included, and the parser words for bad YAML', async () => {
    const t = thread();
    expect(await t.parse('name: a\ncommand: [echo, hi]\n')).toEqual({
      doc: { name: 'a', command: ['echo', 'hi'] },
    });
    const cyclic = (await t.parse('a: &a [1, *a]\n')) as { doc: { a: unknown[] } };
    expect(cyclic.doc.a[1]).toBe(cyclic.doc.a);
    expect(await t.parse('a: [')).toMatchObject({ notYaml: true, error: expect.any(String) });
  });

  it('parses off the event loop: a timer set after the parse started fires before its end', async () => {
    const t = thread(60_000);
    const order: string[] = [];
    const parsed = t.parse(slowYaml(8_000)).then((r) => {
      order.push('parsed');
      return r;
    });
    await new Promise((r) => setTimeout(r, 20));
    order.push('timer');
    expect(await parsed).toHaveProperty('doc');
    expect(order).toEqual(['timer', 'parsed']);
  });

  it('gives up a parse past its bound, ends that thread, and parses the next text in a new one', async () => {
    const t = thread(100);
    expect(await t.parse(slowYaml(20_000))).toEqual({
      error: 'took more than 0.1 s to parse: make it smaller or simpler',
      notYaml: false,
    });
    expect(await t.parse('b: 2\n')).toEqual({ doc: { b: 2 } });
  });

  it('a parse past its heap ends its thread, not the process, and says so', async () => {
    const t = thread(60_000, 16);
    const result = await t.parse(slowYaml(200_000));
    expect(result).toEqual({
      error: expect.stringMatching(/^could not be parsed: .*memory limit/),
      notYaml: false,
    });
    // The thread is fully ended (its last events delivered) and this process goes on.
    await t.close();
    expect(await t.parse('c: 3\n')).toEqual({ doc: { c: 3 } });
  });
});
