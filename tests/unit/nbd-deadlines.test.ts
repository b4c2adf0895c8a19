import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { Deadlines } from '../../src/nbd/deadlines.js';

const MS = 1e6;

/** An owner that records when its deadline expired. */
function owner(clock: VirtualClock, log: string[], name: string) {
  return { expire: () => log.push(`${name}@${clock.now() / MS}`) };
}

describe('Deadlines (one timer for handshakes with the same timeout)', () => {
  it('expires each entry exactly at its own deadline, in order, and not the cancelled ones', async () => {
    const clock = new VirtualClock();
    const d = new Deadlines(clock, 100 * MS, () => true);
    const log: string[] = [];
    const a = d.add(owner(clock, log, 'a'));
    await clock.advance(10);
    d.add(owner(clock, log, 'b'));
    await clock.advance(10);
    const c = d.add(owner(clock, log, 'c'));
    d.add(owner(clock, log, 'e'));
    d.cancel(a);
    d.cancel(c);
    await clock.advance(89);
    expect(log).toEqual([]);
    await clock.advance(1);
    expect(log).toEqual(['b@110']);
    await clock.advance(10);
    expect(log).toEqual(['b@110', 'e@120']);
    // A ticket that expired or was cancelled already: nothing happens.
    d.cancel(a);
    d.cancel(c);
    await clock.advance(1000);
    expect(log).toEqual(['b@110', 'e@120']);
  });

  it('keeps one timer armed while asked to (entries one after another arm no timer each), none otherwise or once cleared', async () => {
    const clock = new VirtualClock();
    let keep = true;
    const d = new Deadlines(clock, 100 * MS, () => keep);
    const log: string[] = [];
    for (let i = 0; i < 50; i++) {
      d.cancel(d.add(owner(clock, log, `x${i}`)));
      await clock.advance(1);
    }
    expect(clock.pendingTimers).toBe(1);
    const late = d.add(owner(clock, log, 'late'));
    await clock.advance(100);
    expect(log).toEqual(['late@150']);
    expect(clock.pendingTimers).toBe(0);
    keep = false;
    d.cancel(d.add(owner(clock, log, 'y')));
    expect(clock.pendingTimers).toBe(0);
    d.add(owner(clock, log, 'z'));
    d.clear();
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(1000);
    expect(log).toEqual(['late@150']);
    d.cancel(late);
  });

  it('stays short when most entries are cancelled behind a slow head (compaction), and still expires the live ones', async () => {
    const clock = new VirtualClock();
    const d = new Deadlines(clock, 100 * MS, () => true);
    const log: string[] = [];
    d.add(owner(clock, log, 'slow'));
    const tickets: number[] = [];
    for (let i = 0; i < 1000; i++) tickets.push(d.add(owner(clock, log, `q${i}`)));
    for (const t of tickets.slice(0, 999)) d.cancel(t);
    await clock.advance(100);
    expect(log).toEqual(['slow@100', 'q999@100']);
    expect((d as unknown as { who: unknown[] }).who.length).toBe(0);
  });
});
