import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlockLayer, RealClock } from '../../src/index.js';

const MS_NS = 1e6;
const DAY_MS = 24 * 3600 * 1000;
/** Node's setTimeout limit: a longer delay overflows to 1 ms. */
const TIMEOUT_MAX_MS = 2 ** 31 - 1;

// RealClock under vitest's fake timers: its time source (process.hrtime) and the Node timers move only when told,
// and they overflow long delays to 1 ms exactly as Node does.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate', 'performance', 'hrtime'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('RealClock', () => {
  it('the fake timers overflow a delay beyond 2^31-1 ms to 1 ms, as Node does', () => {
    let fired = 0;
    setTimeout(() => fired++, TIMEOUT_MAX_MS + 1);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
  });

  it('a timer 30 days away fires neither after 1 ms nor after 24.9 days, and fires at 30 days', () => {
    const clock = new RealClock();
    let fired = 0;
    const start = clock.now();
    clock.setTimer(start + 30 * DAY_MS * MS_NS, () => fired++);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(24.9 * DAY_MS - 1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(30 * DAY_MS - 24.9 * DAY_MS - 1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
    expect(clock.now() - start).toBe(30 * DAY_MS * MS_NS);
    // Nothing is left armed once it has fired.
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60 * DAY_MS);
    expect(fired).toBe(1);
  });

  it('cancel after a re-arm cancels the timer that is armed now', () => {
    const clock = new RealClock();
    let fired = 0;
    const timer = clock.setTimer(clock.now() + 30 * DAY_MS * MS_NS, () => fired++);
    // Past the longest single setTimeout the clock may arm (2^30 ms), so the timer has re-armed.
    vi.advanceTimersByTime(2 ** 30 + 1000);
    expect(fired).toBe(0);
    expect(vi.getTimerCount()).toBe(1);
    timer.cancel();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60 * DAY_MS);
    expect(fired).toBe(0);
    timer.cancel();
  });

  it('a timer up to the Node limit fires at its deadline, not before', () => {
    const clock = new RealClock();
    let fired = 0;
    clock.setTimer(clock.now() + TIMEOUT_MAX_MS * MS_NS, () => fired++);
    vi.advanceTimersByTime(TIMEOUT_MAX_MS - 1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
  });

  it('a timer already due fires on the next loop turn, not synchronously', () => {
    const clock = new RealClock();
    let fired = 0;
    clock.setTimer(clock.now() - 1, () => fired++);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(0);
    expect(fired).toBe(1);
  });

  it('a timer whose deadline passes while it is being armed still never fires inside setTimer', () => {
    // The throttle group sets its "timer armed" state after setTimer returns: a synchronous
    // callback there left a group waiting on a timer that had already fired (found by the soak).
    class SteppingClock extends RealClock {
      t = 1_000_000;
      override now(): number {
        this.t += 600; // each read of the clock is 600 ns later
        return this.t;
      }
    }
    const clock = new SteppingClock();
    let fired = 0;
    clock.setTimer(clock.now() + 1000, () => fired++); // 1 µs away: past due by the second read
    expect(fired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
  });

  it('a read that must wait 48.5 days behind a 1 B/s limit waits all of it, not 1 ms', async () => {
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: '8M' });
    drive.setLimits({ bpsTotal: 1 });
    // The bucket starts empty, so 4 MiB go at once and leave 4 Mi bytes to drain at 1 B/s (~48.5 days).
    await drive.read(0, 4 * 1024 * 1024);
    let done = false;
    const second = drive.read(0, 512).then(() => {
      done = true;
    });
    const waitMs = (4 * 1024 * 1024 - 0.1) * 1000; // QEMU: (level - bucket size) / rate, bucket size avg/10
    await vi.advanceTimersByTimeAsync(1000);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(24.9 * DAY_MS - 1000);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(waitMs - 1000 - 24.9 * DAY_MS);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1000);
    expect(done).toBe(true);
    await second;
    await drive.close();
  });
});
