import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InterruptedError, writeAtomically } from '../../src/tools/atomic-output.js';
import { inputFiles } from '../../src/tools/input-files.js';
import { BlockError, BlockLayer, isBlockError } from '../../src/index.js';
import { rejection } from '../helpers/rejection.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-atomic-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const files = () => fs.readdirSync(dir).sort();


describe('writeAtomically', () => {
  it('the target appears only when the write completes, and the temporary file sits beside it', async () => {
    const target = path.join(dir, 'out.img');
    let seenDuringWrite: string[] = [];
    const r = await writeAtomically(target, async (out) => {
      await out.write(0, Buffer.from('hello'));
      seenDuringWrite = files();
      expect(path.dirname(out.tempPath)).toBe(dir);
      return 42;
    });
    expect(r).toBe(42);
    expect(seenDuringWrite).toHaveLength(1);
    expect(seenDuringWrite[0]).toMatch(/^\.out\.img\.blocklayer-[0-9a-f]+\.tmp$/);
    expect(files()).toEqual(['out.img']);
    expect(fs.readFileSync(target, 'utf8')).toBe('hello');
  });

  it('replacing an existing target keeps its permission bits', async () => {
    const target = path.join(dir, 'out.img');
    fs.writeFileSync(target, 'old');
    fs.chmodSync(target, 0o600);
    await writeAtomically(target, (out) => out.write(0, Buffer.from('new')));
    expect(fs.readFileSync(target, 'utf8')).toBe('new');
    expect(fs.statSync(target).mode & 0o777).toBe(0o600);
  });

  it('a failing write removes the temporary file, keeps the error code and leaves the existing target as it was', async () => {
    const target = path.join(dir, 'out.img');
    fs.writeFileSync(target, 'precious');
    const e = await rejection(
      writeAtomically(target, async (out) => {
        await out.truncate(1 << 20);
        await out.write(0, Buffer.alloc(4096, 1));
        throw new BlockError('ECORRUPT', 'bad cluster', { offset: 4096 });
      }),
    );
    expect(isBlockError(e, 'ECORRUPT')).toBe(true);
    expect((e as BlockError).message).toMatch(/bad cluster \(removed partial output '.*\.tmp'; '.*out\.img' left unchanged\)/);
    expect((e as BlockError).offset).toBe(4096);
    expect(files()).toEqual(['out.img']);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
  });

  it('SIGTERM during the write: InterruptedError with exit code 143, temporary file removed, handlers gone', async () => {
    const target = path.join(dir, 'out.img');
    const before = process.listenerCount('SIGTERM');
    const e = await rejection(
      writeAtomically(target, async (out) => {
        await out.write(0, Buffer.alloc(4096, 1));
        process.emit('SIGTERM', 'SIGTERM');
        await out.write(4096, Buffer.alloc(4096, 2));
      }),
    );
    expect(e).toBeInstanceOf(InterruptedError);
    expect((e as InterruptedError).exitCode).toBe(143);
    expect((e as InterruptedError).message).toMatch(/^interrupted; removed partial output '.*\.tmp'; '.*out\.img' not created$/);
    expect(files()).toEqual([]);
    expect(process.listenerCount('SIGTERM')).toBe(before);
  });

  it('SIGINT gives exit code 130', async () => {
    const e = await rejection(
      writeAtomically(path.join(dir, 'x'), async (out) => {
        process.emit('SIGINT', 'SIGINT');
        out.signal.throwIfAborted();
      }),
    );
    expect((e as InterruptedError).exitCode).toBe(130);
    expect(files()).toEqual([]);
  });

  it('a dangling symlink is followed: its target is created, the link stays', async () => {
    fs.symlinkSync('real.img', path.join(dir, 'link.img'));
    await writeAtomically(path.join(dir, 'link.img'), (out) => out.write(0, Buffer.from('data')));
    expect(fs.lstatSync(path.join(dir, 'link.img')).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'real.img'), 'utf8')).toBe('data');
  });

  it('a target that is not a regular file is refused before anything is written', async () => {
    fs.mkdirSync(path.join(dir, 'sub'));
    let ran = false;
    const e = await rejection(
      writeAtomically(path.join(dir, 'sub'), async () => {
        ran = true;
      }),
    );
    expect(isBlockError(e, 'EINVAL')).toBe(true);
    expect(ran).toBe(false);
    expect(files()).toEqual(['sub']);
  });

  it('a target that is one of the inputs is refused, naming both', async () => {
    const input = path.join(dir, 'in.img');
    fs.writeFileSync(input, 'input');
    fs.symlinkSync('in.img', path.join(dir, 'alias.img'));
    const e = await rejection(writeAtomically(path.join(dir, 'alias.img'), async () => {}, { inputs: [input] }));
    expect(isBlockError(e, 'EINVAL')).toBe(true);
    expect((e as Error).message).toContain(input);
    expect((e as Error).message).toContain(path.join(dir, 'alias.img'));
    expect(fs.readFileSync(input, 'utf8')).toBe('input');
  });
});

describe('inputFiles', () => {
  it('lists the overlay, its backing file and nothing twice', async () => {
    // Checked-in qemu-img-made images: over.qcow2's backing file is base.qcow2, named relatively.
    for (const f of ['base.qcow2', 'over.qcow2']) fs.copyFileSync(path.join(import.meta.dirname, '../fixtures/qcow2', f), path.join(dir, f));
    const layer = new BlockLayer();
    const over = path.join(dir, 'over.qcow2');
    const drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: over, readOnly: true } });
    try {
      expect(inputFiles(drive.node)).toEqual([over, path.join(dir, 'base.qcow2')]);
    } finally {
      await layer.close();
    }
  });
});
