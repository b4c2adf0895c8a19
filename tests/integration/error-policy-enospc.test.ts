import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type IoErrorEvent } from '../../src/index.js';

// A real ENOSPC needs a small file system: a tmpfs, which only root can mount (CI runs as root).
const root = process.getuid?.() === 0;
if (!root && process.env.CI === 'true') throw new Error('CI must run as root to mount the small tmpfs of the ENOSPC test');
if (!root) console.log('error-policy ENOSPC test skipped: it mounts a tmpfs, run as root');

const MiB = 1 << 20;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe.skipIf(!root)('werror=enospc on a full file system (tmpfs)', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-enospc-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
  });
  afterAll(() => {
    execFileSync('umount', [dir]);
    fs.rmdirSync(dir);
  });

  it('pauses on ENOSPC, holds every write, and after space is freed resume() lands every byte', async () => {
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 4 * MiB); // sparse: writes need free blocks
    // Fill the file system, leaving a little room.
    const filler = path.join(dir, 'filler');
    const fd = fs.openSync(filler, 'w');
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(64 * 1024, 1));
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    fs.closeSync(fd);
    fs.truncateSync(filler, fs.statSync(filler).size - 128 * 1024);

    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: image }, werror: 'enospc' });
    const events: IoErrorEvent[] = [];
    d.on('io-error', (e) => events.push(e));
    const data = Buffer.alloc(MiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
    const chunks = 16;
    const size = data.length / chunks;
    const writes = Array.from({ length: chunks }, (_, i) => d.write(i * size, data.subarray(i * size, (i + 1) * size)));
    let settled = 0;
    for (const w of writes) void w.then(() => settled++);
    await new Promise((r) => setTimeout(r, 200));
    expect(d.isPaused).toBe(true);
    expect(d.ioStatus).toBe('nospace');
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => e.action === 'stop' && e.nospace && e.operation === 'write')).toBe(true);
    expect(settled).toBeLessThan(chunks);

    fs.rmSync(filler); // the administrator frees space
    d.resume();
    await Promise.all(writes);
    await d.flush();
    expect(d.isPaused).toBe(false);
    expect(sha(await d.read(0, data.length))).toBe(sha(data));
    await layer.close();
    expect(sha(fs.readFileSync(image).subarray(0, data.length))).toBe(sha(data));
  });
});
