import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertImage, createImage } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

// Creation of any format whose driver has `create` (here vdi) through createImage/convertImage
// and `blocklayer create -f`/`convert -O`, judged by qemu-img.
const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('create -f FORMAT tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MiB = 2 ** 20;
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-create-format-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The CLI on names in the test directory (given absolute: the CLI runs from the checkout, where tsx resolves). */
function cli(...args: string[]) {
  const abs = args.map((a) => (/\.(vdi|qcow2)$/.test(a) ? p(a) : a));
  const r = spawnSync(process.execPath, [...CLI, ...abs], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function run(cmd: string, ...args: string[]) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: dir });
  return { code: r.status, out: r.stdout + r.stderr };
}
const info = (file: string) => JSON.parse(run('qemu-img', 'info', '--output=json', file).out) as Record<string, unknown>;
/** Files in the test directory that are not among `known` (temporary outputs left behind). */
const leftovers = (...known: string[]) => fs.readdirSync(dir).filter((f) => !known.includes(f) && f.includes('.blocklayer-'));

describe.skipIf(!available)('blocklayer create -f vdi', () => {
  it('static=on: the line qemu-img prints, an image qemu-img checks clean, with its data area reserved', () => {
    const r = cli('create', '-f', 'vdi', '-o', 'static=on', 'ours.vdi', '3M');
    expect(r.code).toBe(0);
    const theirs = run('qemu-img', 'create', '-f', 'vdi', '-o', 'static=on', p('ours.vdi.q'), '3M');
    expect(r.out.trim()).toBe(theirs.out.trim().replace('ours.vdi.q', 'ours.vdi'));
    expect(info(p('ours.vdi'))).toMatchObject({ format: 'vdi', 'virtual-size': 3 * MiB });
    expect(run('qemu-img', 'check', 'ours.vdi').code).toBe(0);
    expect(fs.statSync(p('ours.vdi')).size).toBe(fs.statSync(p('ours.vdi.q')).size);
  });

  it('dynamic by default, size from -o size; qemu-io writes it and qemu-img check stays clean', () => {
    const r = cli('create', '-f', 'vdi', '-o', 'size=2M', 'dyn.vdi');
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(`Formatting '${p('dyn.vdi')}', fmt=vdi size=${2 * MiB} static=off`);
    expect(fs.statSync(p('dyn.vdi')).size).toBe(1024);
    expect(run('qemu-io', '-f', 'vdi', '-c', 'write -P 0x42 1M 4k', 'dyn.vdi').code).toBe(0);
    expect(run('qemu-img', 'check', 'dyn.vdi').code).toBe(0);
  });

  it('refuses an unknown -o key, a bad value and an unknown format, naming them, and writes nothing', () => {
    const bad = cli('create', '-f', 'vdi', '-o', 'subformat=fixed', 'bad.vdi', '1M');
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/EINVAL: subformat: unknown option/);
    const value = cli('create', '-f', 'vdi', '-o', 'static=maybe', 'bad.vdi', '1M');
    expect(value.err).toMatch(/EINVAL: static: must be on or off/);
    const format = cli('create', '-f', 'vhs', 'bad.vdi', '1M');
    expect(format.err).toMatch(/'vhs' is not a format images can be created in \(known: raw, qcow2, .*vdi/);
    expect(fs.existsSync(p('bad.vdi'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('--help names vdi and its option for create and convert', () => {
    expect(cli('create', '--help').out).toMatch(/vdi: static=on\|off/);
    expect(cli('convert', '--help').out).toMatch(/-O, --output-format FMT .*\n.*vdi/);
  });
});

describe.skipIf(!available)('createImage with format options', () => {
  it('makes a vdi image, and replaces an existing file only when the new image is complete', async () => {
    fs.writeFileSync(p('keep.vdi'), 'old content');
    await expect(createImage(p('keep.vdi'), { format: 'vdi', size: '1M', formatOptions: { static: 'perhaps' } })).rejects.toMatchObject({ code: 'EINVAL', field: 'static' });
    await expect(createImage(p('keep.vdi'), { format: 'vdi', size: '1M', formatOptions: { bogus: 1 } })).rejects.toMatchObject({ code: 'EINVAL', field: 'bogus' });
    await expect(createImage(p('keep.vdi'), { format: 'vdi', size: '1M', clusterSize: 65536 } as never)).rejects.toMatchObject({ code: 'EINVAL', field: 'clusterSize' });
    expect(fs.readFileSync(p('keep.vdi'), 'utf8')).toBe('old content');
    const made = await createImage(p('keep.vdi'), { format: 'vdi', size: 5 * MiB + 3, formatOptions: { static: true } });
    expect(made).toEqual({ format: 'vdi', virtualSize: 5 * MiB + 512, fileLength: 1024 + 6 * MiB });
    expect(info(p('keep.vdi'))).toMatchObject({ format: 'vdi', 'virtual-size': 5 * MiB + 512 });
    expect(run('qemu-img', 'check', 'keep.vdi').code).toBe(0);
    expect(leftovers()).toEqual([]);
  });
});

describe.skipIf(!available)('backing files and sizes through the generic path', () => {
  it('hands the backing file (name, probed format, size) to the driver, which for vdi refuses it; a size is required', async () => {
    run('qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '2M');
    await expect(createImage(p('over.vdi'), { format: 'vdi', backing: 'base.qcow2' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'backing' });
    await expect(createImage(p('over.vdi'), { format: 'vdi', backing: 'missing.qcow2', backingFormat: 'qcow2' })).rejects.toMatchObject({ code: 'ENOENT', field: 'backing' });
    await expect(createImage(p('over.vdi'), { format: 'vdi' })).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
    const r = cli('create', '-f', 'vdi', '-b', 'base.qcow2', '-F', 'qcow2', 'over.vdi');
    expect(r.err).toMatch(/ENOTSUP: vdi: images cannot have a backing file/);
    expect(fs.existsSync(p('over.vdi'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });
});

describe.skipIf(!available)('convert -O vdi', () => {
  beforeAll(() => {
    run('qemu-img', 'create', '-q', '-f', 'qcow2', 'src.qcow2', '70M');
    const w = ['write -P 0x5a 0 100k', 'write -P 0x33 3M 5000', 'write -P 0x77 65M 2M', 'write -z 10M 1M', 'write -P 0x01 69M 4k'];
    expect(run('qemu-io', '-f', 'qcow2', ...w.flatMap((c) => ['-c', c]), 'src.qcow2').code).toBe(0);
  });

  for (const o of [[], ['-o', 'static=on']]) {
    it(`a qcow2 with data ${o.join(' ') || '(dynamic)'}: qemu-img compare equal, check clean`, () => {
      const out = `out${o.length}.vdi`;
      const r = cli('convert', '-q', '-O', 'vdi', ...o, 'src.qcow2', out);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(run('qemu-img', 'compare', '-f', 'qcow2', '-F', 'vdi', 'src.qcow2', out)).toEqual({ code: 0, out: 'Images are identical.\n' });
      expect(run('qemu-img', 'check', out).code).toBe(0);
      // Only the 5 blocks with data are allocated in a dynamic image (zeros skipped).
      if (o.length === 0) expect(fs.statSync(p(out)).size).toBe(1024 + 5 * MiB);
    });
  }

  it('refuses an unknown -o key and -c before writing anything', () => {
    const bad = cli('convert', '-O', 'vdi', '-o', 'cluster_size=64k', 'src.qcow2', 'bad.vdi');
    expect(bad.err).toMatch(/EINVAL: cluster_size: unknown option/);
    const c = cli('convert', '-O', 'vdi', '-c', 'src.qcow2', 'bad.vdi');
    expect(c.err).toMatch(/EINVAL: -c/);
    const unknown = cli('convert', '-O', 'vhs', 'src.qcow2', 'bad.vdi');
    expect(unknown.err).toMatch(/outputFormat: 'vhs' is not a format/);
    expect(fs.existsSync(p('bad.vdi'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('an interrupted convert leaves no output and no temporary file; an existing output stays as it was', async () => {
    fs.writeFileSync(p('target.vdi'), 'previous');
    const ac = new AbortController();
    const e = await convertImage(p('src.qcow2'), p('target.vdi'), {
      outputFormat: 'vdi',
      signal: ac.signal,
      onProgress: (done) => {
        if (done > 0) ac.abort(new Error('stop'));
      },
    }).catch((x) => x);
    expect(e).toMatchObject({ code: 'ECANCELED' });
    expect(fs.readFileSync(p('target.vdi'), 'utf8')).toBe('previous');
    const fresh = await convertImage(p('src.qcow2'), p('fresh.vdi'), { outputFormat: 'vdi', signal: AbortSignal.abort() }).catch((x) => x);
    expect(fresh).toMatchObject({ code: 'ECANCELED' });
    expect(fs.existsSync(p('fresh.vdi'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('SIGINT during convert -O vdi: exit 130, the temporary file removed, no output', async () => {
    const input = p('full.raw');
    const f = fs.openSync(input, 'w');
    const chunk = Buffer.alloc(8 * MiB, 0x3c);
    for (let i = 0; i < 24; i++) fs.writeSync(f, chunk); // 192 MiB of data: no holes to skip
    fs.closeSync(f);
    const child = spawn(process.execPath, [...CLI, 'convert', '-q', '-f', 'raw', '-O', 'vdi', input, p('cut.vdi')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Wait for the temporary output, then stop the child so that it cannot finish first.
    let seen = false;
    for (let i = 0; i < 20000 && !seen && child.exitCode === null; i++) {
      seen = leftovers().length > 0;
      if (!seen) await new Promise((r) => setTimeout(r, 1));
    }
    expect(seen, 'the convert never created its output').toBe(true);
    child.kill('SIGSTOP');
    child.kill('SIGINT');
    child.kill('SIGCONT');
    expect(await exited).toBe(130);
    expect(err).toMatch(/interrupted; removed partial output/);
    expect(fs.existsSync(p('cut.vdi'))).toBe(false);
    expect(leftovers()).toEqual([]);
    fs.rmSync(input);
  });

  it('the library takes format options by qemu-img name, checked by the driver', async () => {
    const r = await convertImage(p('src.qcow2'), p('lib.vdi'), { outputFormat: 'vdi', formatOptions: { static: true } });
    expect(r).toEqual({ virtualSize: 70 * MiB, outputFormat: 'vdi' });
    expect(run('qemu-img', 'compare', '-f', 'qcow2', '-F', 'vdi', 'src.qcow2', 'lib.vdi').code).toBe(0);
    await expect(convertImage(p('src.qcow2'), p('lib2.vdi'), { outputFormat: 'vdi', clusterSize: 65536 })).rejects.toMatchObject({ code: 'EINVAL', field: 'clusterSize' });
    await expect(convertImage(p('src.qcow2'), p('lib2.vdi'), { outputFormat: 'qcow2', formatOptions: { static: true } })).rejects.toMatchObject({ code: 'EINVAL', field: 'formatOptions' });
    expect(fs.existsSync(p('lib2.vdi'))).toBe(false);
  });
});
