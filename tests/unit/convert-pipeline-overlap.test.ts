import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { convertPipeline } from '../../src/tools/convert-pipeline.js';
import { countPiped } from '../helpers/count-piped.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('convert pipeline: the walk beside the writes', () => {
  it('a piece already read is written while the next block status is still pending', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: 4 * MiB });
    await drive.write(0, Buffer.alloc(4 * MiB, 7));
    const status = drive.blockStatus.bind(drive);
    let release: (() => void) | undefined;
    let held = false;
    // Each status answers at most 1 MiB; the one at 1 MiB waits until the test lets it go.
    drive.blockStatus = (async (offset: number, length: number) => {
      if (offset === 1 * MiB && !held) {
        held = true;
        await new Promise<void>((r) => {
          release = r;
        });
      }
      return status(offset, Math.min(length, 1 * MiB));
    }) as typeof drive.blockStatus;
    const written: number[] = [];
    let firstWritten: () => void = () => {};
    const first = new Promise<void>((r) => {
      firstWritten = r;
    });
    const done = convertPipeline(
      drive,
      {
        grain: 4096,
        write: async (offset) => {
          written.push(offset);
          if (offset === 0) firstWritten();
        },
      },
      { chunk: 1 * MiB, depth: 4, stop: () => {}, progress: () => {} },
    );
    await first;
    expect(held).toBe(true);
    expect(release).toBeDefined();
    expect(written).toEqual([0]);
    release!();
    await done;
    expect(written).toEqual([0, 1, 2, 3].map((m) => m * MiB));
  });

  it('block status is asked for a window (chunk × depth), doubled over zeros, not for the whole rest of the drive', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: 256 * MiB });
    await drive.write(0, Buffer.alloc(2 * MiB, 1));
    await drive.write(250 * MiB, Buffer.alloc(1 * MiB, 2));
    const status = drive.blockStatus.bind(drive);
    const asked: [number, number][] = [];
    drive.blockStatus = ((offset: number, length: number) => {
      asked.push([offset, length]);
      return status(offset, length);
    }) as typeof drive.blockStatus;
    const written = await countPiped(drive, 1 * MiB, 2);
    expect(written).toBe(3 * MiB);
    // the first status asks for 2 MiB (1 MiB pieces, 2 at a time), not 256 MiB
    expect(asked[0]).toEqual([0, 2 * MiB]);
    for (const [offset, length] of asked) expect(length).toBeLessThanOrEqual(256 * MiB - offset);
    // the zeros between are stepped over in a few doubling windows, not in 2 MiB steps
    expect(asked.length).toBeLessThan(20);
  });
});
