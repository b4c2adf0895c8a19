import { describe, expect, it } from 'vitest';
import { BlockLayer, VirtualClock } from '../../src/index.js';
import type { ThrottleOptions } from '../../src/throttle/limits.js';

type Op = ['r' | 'w', number];

/** Submits every request at t = 0 on one null drive and returns each request's admission time (ns). */
async function timeline(limits: ThrottleOptions, ops: Op[]): Promise<number[]> {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const drive = await layer.openDrive({ driver: 'null', size: '1G', throttle: limits });
  const times: number[] = new Array(ops.length);
  const done = ops.map(([kind, size], i) =>
    (kind === 'r' ? drive.read(0, size) : drive.write(0, new Uint8Array(size))).then(() => {
      times[i] = clock.now();
    }),
  );
  await clock.runUntilIdle();
  await Promise.all(done);
  await drive.close();
  return times;
}

function expectTimes(actual: number[], expected: number[]) {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((t, i) => {
    // Within 1 µs of the reference model (it truncates to whole ns like QEMU).
    expect(Math.abs(t - expected[i]), `request ${i}: ${t} vs ${expected[i]}`).toBeLessThanOrEqual(1000);
  });
}

const reads = (n: number, size = 512): Op[] => Array.from({ length: n }, () => ['r', size] as Op);
const ms = (...v: number[]) => v.map((x) => x * 1e6);

describe('single-drive timelines (reference §5.3)', () => {
  it('S1: bps_rd 4096 admits 512-byte reads at 0, 25 ms, then every 125 ms', async () => {
    expectTimes(await timeline({ bpsRead: 4096 }, reads(10)), [
      0, 24999999, 150000000, 275000000, 399999999, 524999999, 649999999, 774999999, 899999999, 1024999999,
    ]);
  });

  it('S2: iops 10 admits two reads at once, then one per 100 ms', async () => {
    expectTimes(await timeline({ iopsTotal: 10 }, reads(8)), ms(0, 0, 100, 200, 300, 400, 500, 600));
  });

  it('S3a: iops_size 4096 counts an 8 KiB read as two operations', async () => {
    expectTimes(await timeline({ iopsTotal: 10, iopsSize: 4096 }, reads(6, 8192)), ms(0, 100, 300, 500, 700, 900));
  });

  it('S3b: requests no larger than iops_size count as one operation', async () => {
    expectTimes(await timeline({ iopsTotal: 10, iopsSize: 4096 }, reads(6, 2048)), ms(0, 0, 100, 200, 300, 400));
  });

  it('S3c: a 6 KiB read counts 1.5 operations with iops_size 4096', async () => {
    expectTimes(await timeline({ iopsTotal: 10, iopsSize: 4096 }, reads(6, 6144)), ms(0, 50, 200, 350, 500, 650));
  });

  it('S4: reads and writes share the bps total bucket but wait independently', async () => {
    const ops: Op[] = [];
    for (let i = 0; i < 5; i++) ops.push(['r', 512], ['w', 512]);
    expectTimes(await timeline({ bpsTotal: 4096 }, ops), [
      0, 24999999, 24999999, 150e6, 274999999, 399999999, 524999999, 649999999, 774999999, 899999999,
    ]);
  });

  it('S5: iops_rd and iops_wr limit their directions separately', async () => {
    const ops: Op[] = [...reads(6), ...Array.from({ length: 6 }, () => ['w', 512] as Op)];
    expectTimes(await timeline({ iopsRead: 10, iopsWrite: 10 }, ops), ms(0, 0, 100, 200, 300, 400, 0, 0, 100, 200, 300, 400));
  });

  it('S8: one large read overshoots the bucket and delays the next ones', async () => {
    expectTimes(await timeline({ bpsRead: 4096 }, [['r', 8192], ['r', 512], ['r', 512]]), [0, 1900000000, 2025000000]);
  });

  it('S10: iops_max equal to iops (length 1) lets 11 reads go at once', async () => {
    expectTimes(await timeline({ iopsTotal: 10, iopsTotalMax: 10 }, reads(14)), [...ms(...Array(11).fill(0)), ...ms(100, 200, 300)]);
  });

  it('S11: with burst length 1 the whole burst of 50 is consumed instantly', async () => {
    expectTimes(
      await timeline({ iopsTotal: 10, iopsTotalMax: 50 }, reads(55)),
      [...ms(...Array(51).fill(0)), ...ms(100, 200, 300, 400)],
    );
  });

  it('S12: bps dominates when it is the tighter limit', async () => {
    expectTimes(await timeline({ bpsRead: 4096, iopsRead: 10 }, reads(6, 1024)), [
      0, 150e6, 399999999, 649999999, 899999999, 1149999999,
    ]);
  });

  it('S13: iops dominates for small requests', async () => {
    expectTimes(await timeline({ bpsRead: 4096, iopsRead: 10 }, reads(8, 128)), ms(0, 0, 100, 200, 300, 400, 500, 600));
  });
});

describe('drain (reference §3.6)', () => {
  it('D1: draining lets every queued read go at once and still charges the bucket', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const drive = await layer.openDrive({ driver: 'null', size: '1G', throttle: { bpsRead: 4096 } });
    const times: number[] = [];
    const all = Array.from({ length: 10 }, () => drive.read(0, 512).then(() => times.push(clock.now())));
    await drive.drain();
    await Promise.all(all);
    expect(times).toEqual(Array(10).fill(0));
    // 5120 bytes were charged: the next read waits until the level drains to 409.6 bytes.
    let at = -1;
    const next = drive.read(0, 512).then(() => {
      at = clock.now();
    });
    await clock.runUntilIdle();
    await next;
    expect(Math.abs(at - ((5120 - 409.6) / 4096) * 1e9)).toBeLessThanOrEqual(1000);
    await drive.close();
  });
});
