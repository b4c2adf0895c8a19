import { describe, expect, it } from 'vitest';
import { BlockLayer, VirtualClock } from '../../src/index.js';

const MS = 1e6;

/** A chain of `depth` awaits, then `done()`. */
async function chain(depth: number, done: () => void): Promise<void> {
  for (let i = 0; i < depth; i++) await null;
  done();
}

describe('VirtualClock: what settles between two timers', () => {
  it('a promise chain of depth 10 000 started by a timer callback completes before the next timer fires (later and same deadline)', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      log.push('t1');
      void chain(10_000, () => log.push('chain1'));
    });
    clock.setTimer(1 * MS, () => {
      log.push('t1b');
      void chain(10_000, () => log.push('chain1b'));
    });
    clock.setTimer(2 * MS, () => log.push('t2'));
    await clock.runUntilIdle();
    expect(log).toEqual(['t1', 'chain1', 't1b', 'chain1b', 't2']);
  });

  it('an I/O of the memory driver started by a timer callback completes before the next timer fires', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const drive = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    const log: string[] = [];
    clock.setTimer(5 * MS, () => {
      log.push('t1');
      void drive
        .write(4096, new Uint8Array(4096).fill(7))
        .then(() => drive.read(4096, 4096))
        .then((b) => log.push(`read ${b[0]}`));
    });
    clock.setTimer(6 * MS, () => log.push('t2'));
    await clock.advance(10);
    expect(log).toEqual(['t1', 'read 7', 't2']);
    await layer.close();
  });

  it('a setImmediate scheduled by a timer callback, or by promise work it started, runs before the next timer', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      log.push('t1');
      setImmediate(() => log.push('immediate'));
    });
    clock.setTimer(2 * MS, () => {
      log.push('t2');
      void chain(50, () => setImmediate(() => log.push('immediate from chain')));
    });
    clock.setTimer(2 * MS, () => log.push('t2b'));
    await clock.runUntilIdle();
    expect(log).toEqual(['t1', 'immediate', 't2', 'immediate from chain', 't2b']);
  });

  it("an unref'd setImmediate scheduled by a timer callback runs before the next timer too", async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      log.push('t1');
      setImmediate(() => log.push('unref immediate')).unref();
    });
    clock.setTimer(1 * MS, () => log.push('t1b'));
    await clock.runUntilIdle();
    expect(log).toEqual(['t1', 'unref immediate', 't1b']);
  });

  it('a process.nextTick queued by a timer callback runs before the next timer', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      log.push('t1');
      process.nextTick(() => log.push('tick'));
    });
    clock.setTimer(1 * MS, () => log.push('t1b'));
    await clock.runUntilIdle();
    expect(log).toEqual(['t1', 'tick', 't1b']);
  });

  it('a process.nextTick queued by promise work of a timer callback runs before the next timer', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      log.push('t1');
      void chain(20, () => process.nextTick(() => log.push('tick from chain')));
    });
    clock.setTimer(1 * MS, () => log.push('t1b'));
    await clock.runUntilIdle();
    expect(log).toEqual(['t1', 'tick from chain', 't1b']);
  });

  it('a timer callback that throws rejects the advance; later timers stay pending and fire on the next advance', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    clock.setTimer(1 * MS, () => {
      throw new Error('boom');
    });
    clock.setTimer(2 * MS, () => log.push('t2'));
    await expect(clock.advance(5)).rejects.toThrow('boom');
    expect(log).toEqual([]);
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(5);
    expect(log).toEqual(['t2']);
  });

  it('runUntilIdle stops with an error after maxTimers timers when timers keep coming', async () => {
    const clock = new VirtualClock();
    let fired = 0;
    const again = () => {
      fired++;
      clock.setTimer(clock.now() + MS, again);
    };
    clock.setTimer(MS, again);
    await expect(clock.runUntilIdle(100)).rejects.toThrow('more than 100 timers');
    expect(fired).toBe(100);
  });

  it('fires timers without an event-loop turn each: 2000 timers take fewer than 10 loop turns', async () => {
    const clock = new VirtualClock();
    let fired = 0;
    for (let i = 0; i < 2000; i++) clock.setTimer(i * MS, () => fired++);
    // An unref'd immediate that re-arms itself counts loop turns without being waited for.
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count).unref();
    };
    setImmediate(count).unref();
    await clock.runUntilIdle();
    counting = false;
    expect(fired).toBe(2000);
    expect(turns).toBeLessThan(10);
  });
});

describe('VirtualClock: timer order and cancellation', () => {
  it('fires random timers in deadline order, ties in creation order, and never a cancelled one', async () => {
    const clock = new VirtualClock();
    // A deterministic pseudo-random sequence (LCG).
    let x = 12345;
    const rand = (n: number) => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return x % n;
    };
    const expected: { deadline: number; id: number }[] = [];
    const fired: number[] = [];
    const timers = [];
    for (let id = 0; id < 3000; id++) {
      const deadline = rand(200) * MS;
      timers.push({ id, deadline, timer: clock.setTimer(deadline, () => fired.push(id)) });
    }
    // Cancel two thirds (enough to make the heap compact itself), some twice.
    for (const t of timers) {
      if (t.id % 3 !== 0) {
        t.timer.cancel();
        if (t.id % 5 === 0) t.timer.cancel();
      } else expected.push({ deadline: t.deadline, id: t.id });
    }
    expect(clock.pendingTimers).toBe(1000);
    expected.sort((a, b) => a.deadline - b.deadline || a.id - b.id);
    const end = await clock.runUntilIdle();
    expect(fired).toEqual(expected.map((e) => e.id));
    expect(end).toBe(expected[expected.length - 1].deadline);
    expect(clock.pendingTimers).toBe(0);
  });

  it('a timer set by a callback for a deadline already past fires next, at the current time; cancel after firing is a no-op', async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    const first = clock.setTimer(3 * MS, () => {
      log.push(`a@${clock.now()}`);
      clock.setTimer(1 * MS, () => log.push(`late@${clock.now()}`));
    });
    clock.setTimer(4 * MS, () => log.push(`b@${clock.now()}`));
    await clock.advance(10);
    first.cancel();
    expect(log).toEqual([`a@${3 * MS}`, `late@${3 * MS}`, `b@${4 * MS}`]);
    expect(clock.pendingTimers).toBe(0);
    expect(clock.now()).toBe(10 * MS);
  });

  it('advance stops at the target: later timers stay pending', async () => {
    const clock = new VirtualClock();
    let fired = 0;
    clock.setTimer(2 * MS, () => fired++);
    clock.setTimer(5 * MS, () => fired++);
    await clock.advance(3);
    expect(fired).toBe(1);
    expect(clock.pendingTimers).toBe(1);
    expect(clock.now()).toBe(3 * MS);
  });
});
