/** Something a StreamFifo can hold: a bit per FIFO, set while that FIFO holds it. */
export interface Queueable {
  queuedIn: number;
}

/**
 * A first-in, first-out queue of distinct items that allocates nothing once it has grown to
 * the most items it ever held: a ring buffer that doubles when full, with membership kept as a
 * bit on each item (`bit`, one per FIFO an item may be in), not in a hash table.
 *
 * Why not a Set, as the session had: its send scheduler takes a stream out and puts it back at
 * every DATA frame, and a Set's deleted entries make V8 rebuild its hash table every few such
 * operations, while reading its first entry (`values().next()`) makes an iterator and a result
 * object each time: about 100 of the 4,824 bytes the relay allocated per 4-byte round trip
 * (docs/PROTOCOL.md §8, "(c)'s tail, continued").
 *
 * Bounded by its callers: an item is in it at most once, and the session's items are its open
 * streams, at most MAX_STREAMS a side.
 */
export class StreamFifo<T extends Queueable> {
  /** Length a power of two, so that positions wrap with a mask. */
  private items: (T | undefined)[] = new Array<T | undefined>(8).fill(undefined);
  private head = 0;
  private count = 0;

  constructor(private readonly bit: number) {}

  get size(): number {
    return this.count;
  }

  /** Adds `item` at the back, unless this FIFO holds it already (then it keeps its place). */
  push(item: T): void {
    if (item.queuedIn & this.bit) return;
    item.queuedIn |= this.bit;
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) & (this.items.length - 1)] = item;
    this.count++;
  }

  /** Takes the item at the front, or undefined when empty. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head] as T;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.count--;
    item.queuedIn &= ~this.bit;
    return item;
  }

  /** Empties it (each item's bit cleared, so it may be pushed again). */
  clear(): void {
    while (this.shift() !== undefined);
  }

  private grow(): void {
    const old = this.items;
    const items = new Array<T | undefined>(old.length * 2).fill(undefined);
    for (let i = 0; i < this.count; i++) items[i] = old[(this.head + i) & (old.length - 1)];
    this.items = items;
    this.head = 0;
  }
}
