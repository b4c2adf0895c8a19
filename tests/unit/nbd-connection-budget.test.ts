import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConnectionBudget } from '../../src/nbd/connection-budget.js';
import { MemoryBudget } from '../../src/nbd/memory-budget.js';

describe("a connection's share of the server budget (a count, not a record per request)", () => {
  it('gives every byte back exactly once: per reply, or all at once when the socket closes (later give-backs do nothing)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('take' as const), n: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({ kind: fc.constant('give' as const), i: fc.nat() }),
      fc.record({ kind: fc.constant('close' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const server = new MemoryBudget(20_000);
        const a = new ConnectionBudget(server);
        const other = new ConnectionBudget(server);
        // Another connection's bytes never move with this one's.
        expect(other.tryTake(1000)).toBe(true);
        const holds: number[] = [];
        let closed = false;
        for (const o of ops) {
          if (o.kind === 'take') {
            if (a.tryTake(o.n)) holds.push(o.n);
          } else if (o.kind === 'give') {
            if (holds.length > 0) a.giveBack(holds.splice(o.i % holds.length, 1)[0] as number);
          } else {
            a.close();
            closed = true;
          }
          const held = closed ? 0 : holds.reduce((x, y) => x + y, 0);
          expect(server.used).toBe(1000 + held);
        }
        a.close();
        for (const n of holds) a.giveBack(n);
        expect(server.used).toBe(1000);
        other.giveBack(1000);
        expect(server.used).toBe(0);
      }),
    );
  });

  it('a wait for bytes ends when the connection closes, holding nothing', async () => {
    const server = new MemoryBudget(100);
    const a = new ConnectionBudget(server);
    const b = new ConnectionBudget(server);
    expect(a.tryTake(100)).toBe(true);
    const waiting = b.reserve(50, () => false);
    expect(server.waiting).toBe(1);
    b.close();
    await expect(waiting).resolves.toBe(false);
    expect(server.waiting).toBe(0);
    a.giveBack(100);
    expect(server.used).toBe(0);
  });

  it('bytes granted to a connection that stopped meanwhile go straight back', async () => {
    const server = new MemoryBudget(100);
    const a = new ConnectionBudget(server);
    const b = new ConnectionBudget(server);
    expect(a.tryTake(100)).toBe(true);
    let stopped = false;
    const waiting = b.reserve(60, () => stopped);
    stopped = true;
    a.giveBack(100);
    await expect(waiting).resolves.toBe(false);
    expect(server.used).toBe(0);
  });
});
