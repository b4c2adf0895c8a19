/**
 * How a user tests their own code under an I/O limit, instantly: a VirtualClock, a memory
 * drive with limits, and time moved by hand. Run: npx vitest run examples/
 */
import { describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, VirtualClock } from 'blocklayer';

/** The "user code" under test: copies a region block by block and reports progress. */
async function copyRegion(drive: Drive, from: number, to: number, length: number, block: number, onProgress: (bytes: number) => void) {
  for (let pos = 0; pos < length; pos += block) {
    const data = await drive.read(from + pos, Math.min(block, length - pos));
    await drive.write(to + pos, data);
    onProgress(pos + data.length);
  }
}

describe('copyRegion under a 64 KiB/s write limit', () => {
  it('copies 256 KiB in about 4 virtual seconds and reports progress as it goes', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const drive = await layer.openDrive({ driver: 'memory', size: '1M', throttle: { bpsWrite: 64 * 1024 } });
    await drive.write(0, new Uint8Array(256 * 1024).fill(0xab));
    drive.setLimits({ bpsWrite: 64 * 1024 }); // fresh buckets for the measured part

    const progress: [number, number][] = [];
    const copying = copyRegion(drive, 0, 512 * 1024, 256 * 1024, 16 * 1024, (b) => progress.push([clock.now() / 1e9, b]));
    await clock.runUntilIdle();
    await copying;

    const [lastTime, lastBytes] = progress[progress.length - 1];
    expect(lastBytes).toBe(256 * 1024);
    expect(lastTime).toBeGreaterThan(3.5);
    expect(lastTime).toBeLessThan(4.1);
    expect([...(await drive.read(512 * 1024, 4))]).toEqual([0xab, 0xab, 0xab, 0xab]);
    await drive.close();
  });
});
