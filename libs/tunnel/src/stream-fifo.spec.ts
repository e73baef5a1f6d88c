import fc from 'fast-check';
import { StreamFifo } from './stream-fifo';

const item = (id: number) => ({ id, queuedIn: 0 });

describe('StreamFifo', () => {
  it('keeps first-in, first-out order and each item once', () => {
    const q = new StreamFifo<ReturnType<typeof item>>(1);
    const [a, b, c] = [item(1), item(2), item(3)];
    q.push(a);
    q.push(b);
    q.push(a); // already in: keeps its place
    q.push(c);
    expect(q.size).toBe(3);
    expect([q.shift(), q.shift(), q.shift(), q.shift()]).toEqual([a, b, c, undefined]);
    expect(q.size).toBe(0);
    q.push(a); // out again, so it may come back
    expect(q.shift()).toBe(a);
  });

  it('lets one item be in two FIFOs at once, each by its own bit', () => {
    const send = new StreamFifo<ReturnType<typeof item>>(1);
    const credit = new StreamFifo<ReturnType<typeof item>>(2);
    const a = item(1);
    send.push(a);
    credit.push(a);
    expect(a.queuedIn).toBe(3);
    expect(send.shift()).toBe(a);
    expect(a.queuedIn).toBe(2);
    credit.push(a); // still in credit: no second entry
    expect(credit.size).toBe(1);
    credit.clear();
    expect(a.queuedIn).toBe(0);
    expect(credit.shift()).toBeUndefined();
  });

  it('behaves as a Set used as a queue, across growth and wrap-around', () => {
    const op = fc.oneof(
      fc.record({ push: fc.integer({ min: 0, max: 40 }) }),
      fc.constant({ shift: true }),
      fc.constant({ clear: true }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const items = Array.from({ length: 41 }, (_, i) => item(i));
        const q = new StreamFifo<ReturnType<typeof item>>(4);
        const model = new Set<ReturnType<typeof item>>();
        for (const o of ops) {
          if ('push' in o) {
            q.push(items[o.push]);
            model.add(items[o.push]);
          } else if ('shift' in o) {
            const first = model.values().next();
            if (!first.done) model.delete(first.value);
            expect(q.shift()).toBe(first.done ? undefined : first.value);
          } else {
            q.clear();
            model.clear();
          }
          expect(q.size).toBe(model.size);
        }
        for (const it of items) expect(Boolean(it.queuedIn & 4)).toBe(model.has(it));
      }),
    );
  });
});
