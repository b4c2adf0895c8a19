/**
 * Regressions found by scripts/fuzz.ts: each fixture under tests/fixtures/fuzz is an input that
 * once made the library fail with something other than a BlockError. Option trees and parser
 * inputs are JSON in the fuzzer's encoding ($ref for a cycle, $undefined, $number, $deep).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, fromLibvirtIotune, openImage, parseThrottleGroupObject } from '../../src/index.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/fuzz');

/** Decodes the fuzzer's JSON: {$ref: "#/a/b"} (a cycle), {$undefined}, {$number: "NaN"}, {$deep: n, node, leaf}. */
function decode(text: string): unknown {
  const root = JSON.parse(text) as unknown;
  const byPath = new Map<string, unknown>();
  const walk = (x: unknown, at: string): unknown => {
    if (x === null || typeof x !== 'object') return x;
    if (Array.isArray(x)) return x.map((e, i) => walk(e, `${at}/${i}`));
    const o = x as Record<string, unknown>;
    if ('$undefined' in o) return undefined;
    if ('$number' in o) return Number(o.$number);
    if ('$ref' in o) return { $ref: o.$ref };
    if ('$deep' in o) {
      // a chain of `$deep` copies of `node`, each with the next as its file, ending in `leaf`
      let cur = walk(o.leaf, `${at}/leaf`) as Record<string, unknown>;
      for (let i = 0; i < (o.$deep as number); i++) cur = { ...(o.node as object), file: cur };
      return cur;
    }
    const out: Record<string, unknown> = {};
    byPath.set(at, out);
    for (const [k, v] of Object.entries(o)) out[k] = walk(v, `${at}/${k}`);
    return out;
  };
  const decoded = walk(root, '#');
  // second pass: resolve references to the objects they name
  const link = (x: unknown, seen: Set<unknown>): void => {
    if (x === null || typeof x !== 'object' || seen.has(x)) return;
    seen.add(x);
    for (const [k, v] of Object.entries(x)) {
      if (v !== null && typeof v === 'object' && '$ref' in v) (x as Record<string, unknown>)[k] = byPath.get((v as { $ref: string }).$ref);
      else link(v, seen);
    }
  };
  link(decoded, new Set());
  return decoded;
}

const fixture = (name: string) => decode(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

/** The error a call throws (fails the test if it returns). */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

function expectBlockError(e: unknown, code: string, message?: RegExp): void {
  expect(e, String(e)).toBeInstanceOf(BlockError);
  expect((e as BlockError).code).toBe(code);
  if (message) expect((e as BlockError).message).toMatch(message);
}

let layer = new BlockLayer();
afterEach(async () => {
  await layer.close();
  layer = new BlockLayer();
});

describe('images', () => {
  it('a backing file name without a format that names a directory is refused with EISDIR (qemu-io: not a regular file)', async () => {
    const e = await rejection(layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: path.join(FIXTURES, 'backing-is-directory.qcow2'), readOnly: true } }));
    expectBlockError(e, 'EISDIR', /directory/);
  });

  it('a raw backing file that names a directory is refused at open with EISDIR, not read later as EIO', async () => {
    const e = await rejection(layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: path.join(FIXTURES, 'backing-raw-is-directory.qcow2'), readOnly: true } }));
    expectBlockError(e, 'EISDIR', /directory/);
  });

  it('a data file name with a NUL byte in the header ends at the NUL, as in QEMU (qemu-io reads 0x5a from data-file-name-nul.raw)', async () => {
    const drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: path.join(FIXTURES, 'data-file-name-nul.qcow2'), readOnly: true } });
    expect(drive.node.info().dataFile).toBe('data-file-name-nul.raw');
    expect(Buffer.from(await drive.read(0, 4096))).toEqual(Buffer.alloc(4096, 0x5a));
    expect(Buffer.from(await drive.read(4096, 61440))).toEqual(Buffer.alloc(61440));
  });

  it('a backing file name with a NUL byte ends at the NUL, as in QEMU (qemu-io reads 0x5a through it)', async () => {
    const drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: path.join(FIXTURES, 'backing-name-nul.qcow2'), readOnly: true } });
    expect(drive.node.info().backingFile).toBe('data-file-name-nul.raw');
    expect(Buffer.from(await drive.read(0, 4096))).toEqual(Buffer.alloc(4096, 0x5a));
  });

  it('a file name with a NUL byte is refused with EINVAL naming the field, not a catch-all EIO', async () => {
    const e = await rejection(layer.openDrive({ driver: 'file', filename: `${FIXTURES}/a\0b`, readOnly: true }));
    expectBlockError(e, 'EINVAL', /NUL/);
    expect((e as BlockError).field).toBe('filename');
  });

  it('openImage on a directory rejects with EISDIR', async () => {
    expectBlockError(await rejection(openImage(FIXTURES, {}, layer)), 'EISDIR', /directory/);
  });

  it('the file driver refuses a directory read-only and read-write with EISDIR', async () => {
    expectBlockError(await rejection(layer.openDrive({ driver: 'file', filename: FIXTURES, readOnly: true })), 'EISDIR', /directory/);
    expectBlockError(await rejection(layer.openDrive({ driver: 'file', filename: FIXTURES })), 'EISDIR', /directory/);
  });
});

describe('option trees', () => {
  it('openDrive(null) and openDrive(undefined) reject with EINVAL', async () => {
    expect(fixture('options-null.json')).toBeNull();
    expectBlockError(await rejection(layer.openDrive(null as never)), 'EINVAL');
    expectBlockError(await rejection(layer.openDrive(undefined as never)), 'EINVAL');
  });

  it('a cyclic option tree is refused with EINVAL by openDrive and openNode', async () => {
    const tree = fixture('options-cyclic.json') as Record<string, unknown>;
    expect(tree.file).toBe(tree);
    expectBlockError(await rejection(layer.openDrive(tree as never)), 'EINVAL', /contain themselves/);
    expectBlockError(await rejection(layer.openNode(tree as never)), 'EINVAL', /contain themselves/);
  });

  it('a tree nested 2000 levels deep is refused with EINVAL, not a stack overflow', async () => {
    layer.createThrottleGroup('g');
    const tree = fixture('options-deep.json');
    expectBlockError(await rejection(layer.openDrive(tree as never)), 'EINVAL', /nested deeper/);
  });

  it('null for a required child (raw file: null) is refused with EINVAL, not a TypeError in the driver', async () => {
    const tree = fixture('options-required-child-null.json');
    expectBlockError(await rejection(layer.openDrive(tree as never)), 'EINVAL', /^file: required/);
    layer.createThrottleGroup('g');
    for (const tree of [{ driver: 'qcow2' }, { driver: 'throttle', throttleGroup: 'g' }, { driver: 'blkdebug' }]) {
      expectBlockError(await rejection(layer.openDrive({ ...tree, file: null } as never)), 'EINVAL', /^file: required/);
    }
  });

  it('a tree nested 100 levels deep still opens', async () => {
    let tree: Record<string, unknown> = { driver: 'memory', size: 4096 };
    for (let i = 0; i < 100; i++) tree = { driver: 'raw', file: tree };
    const drive = await layer.openDrive(tree as never);
    expect(drive.length).toBe(4096);
  });
});

describe('option parsers', () => {
  const run = (name: string) => {
    const { parser, input } = fixture(name) as { parser: string; input: unknown };
    if (parser === 'fromLibvirtIotune') return () => fromLibvirtIotune(input as never);
    if (parser.startsWith('parseThrottleGroupObject')) return () => parseThrottleGroupObject(input as never);
    throw new Error(`unknown parser ${parser}`);
  };

  for (const name of ['libvirt-null-value.json', 'libvirt-boolean-value.json', 'libvirt-undefined-value.json']) {
    it(`fromLibvirtIotune refuses a value that is neither a number nor a string with EINVAL (${name})`, () => {
      expectBlockError(thrown(run(name)), 'EINVAL', /expects a non-negative integer/);
    });
  }

  it('fromLibvirtIotune refuses an object as group_name with EINVAL', () => {
    expectBlockError(thrown(run('libvirt-object-group.json')), 'EINVAL', /group_name/);
  });

  for (const name of ['qom-null.json', 'qom-undefined.json']) {
    it(`parseThrottleGroupObject refuses input that is neither a string nor an object with EINVAL (${name})`, () => {
      expectBlockError(thrown(run(name)), 'EINVAL');
    });
  }
});
