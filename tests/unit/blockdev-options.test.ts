// QAPI BlockdevOptions → our node options, and qemu-storage-daemon's keyval syntax: pure logic.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { keyvalObject } from '../../src/cli/serve-qsd-args.js';
import { BlockLayer } from '../../src/index.js';
import { translateBlockdevOptions } from '../../src/qmp/blockdev-options.js';

const none = () => undefined;
const desc = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
};

describe('translateBlockdevOptions', () => {
  it('maps QEMU driver and member names to ours, children inline', () => {
    const { options, nodeNames } = translateBlockdevOptions(
      {
        driver: 'qcow2',
        'node-name': 'q0',
        'l2-cache-size': 1048576,
        'lazy-refcounts': true,
        backing: null,
        file: { driver: 'file', 'node-name': 'f0', filename: '/x', aio: 'native', locking: 'off' },
      },
      none,
    );
    expect(options).toEqual({ driver: 'qcow2', nodeName: 'q0', l2CacheSize: 1048576, backing: null, file: { driver: 'file', nodeName: 'f0', filename: '/x', locking: 'off' } });
    expect(nodeNames).toEqual(['f0', 'q0']);
    expect(translateBlockdevOptions({ driver: 'null-co', 'node-name': 'n', 'latency-ns': 5, 'read-zeroes': false }, none).options).toEqual({ driver: 'null', nodeName: 'n', latencyNs: 5, readZeroes: false });
    expect(translateBlockdevOptions({ driver: 'blkdebug', 'node-name': 'b', image: { driver: 'null-co' }, 'max-transfer': 4096 }, none).options).toEqual({ driver: 'blkdebug', nodeName: 'b', maxTransfer: 4096, file: { driver: 'null' } });
  });

  it("maps blkdebug's inject-error rules that fire from the node's creation, and refuses the ones it cannot honour", async () => {
    const bd = (rules: unknown) => ({ driver: 'blkdebug', 'node-name': 'b', image: { driver: 'null-co' }, 'inject-error': rules });
    expect(translateBlockdevOptions(bd([{ event: 'none', iotype: 'write', errno: 28, sector: 8, once: true, immediately: true }, { event: 'none' }]), none).options).toEqual({
      driver: 'blkdebug',
      nodeName: 'b',
      file: { driver: 'null' },
      rules: [
        { event: 'write', code: 'ENOSPC', offset: 4096, once: true },
        { event: ['read', 'write', 'write-zeroes', 'discard', 'flush'], code: 'EIO', once: false },
      ],
    });
    // keyval (--blockdev inject-error.0.event=none,inject-error.0.errno=5): strings, a list keyed 0, 1, …
    const keyval = translateBlockdevOptions({ driver: 'blkdebug', 'node-name': 'b', image: { driver: 'null-co' }, 'inject-error': { 0: { event: 'none', errno: '13', once: 'on' } } }, none, true);
    expect((keyval.options as unknown as { rules: unknown }).rules).toEqual([{ event: ['read', 'write', 'write-zeroes', 'discard', 'flush'], code: 'EACCES', once: true }]);
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'l2_update' }]), none))).toBe("Parameter 'inject-error[0].event': only 'none' (active from the node's creation) is supported by this server");
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'nope' }]), none))).toBe("Parameter 'event' does not accept value 'nope'");
    expect(desc(() => translateBlockdevOptions(bd([{ iotype: 'write' }]), none))).toBe("Parameter 'inject-error[0].event' is missing");
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'none', errno: 'x' }]), none))).toBe("Invalid parameter type for 'inject-error[0].errno', expected: integer");
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'none', errno: 22 }]), none))).toMatch(/^Parameter 'inject-error\[0\]\.errno': only 5 \(EIO\)/);
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'none', state: 1 }]), none))).toBe("Parameter 'inject-error[0].state' is not supported by this server");
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'none', iotype: 'block-status' }]), none))).toBe("Parameter 'inject-error[0].iotype': 'block-status' is not supported by this server");
    expect(desc(() => translateBlockdevOptions(bd([{ event: 'none', what: 1 }]), none))).toBe("Parameter 'inject-error[0].what' is unexpected");
    expect(desc(() => translateBlockdevOptions(bd('none'), none))).toBe("Invalid parameter type for 'inject-error', expected: array");
    expect(desc(() => translateBlockdevOptions({ ...bd([]), 'set-state': [{ event: 'none', 'new_state': 2 }] }, none))).toBe("Parameter 'set-state' is not supported by this server");
    // the rules work on the opened node: a write fails, a read passes
    await using layer = new BlockLayer();
    const node = await layer.addNode(translateBlockdevOptions(bd([{ event: 'none', iotype: 'write' }]), none).options);
    await node.read(0, new Uint8Array(512));
    await expect(node.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EIO' });
  });

  it('passes a child given by name as the node the lookup finds', async () => {
    await using layer = new BlockLayer();
    const n = await layer.addNode({ driver: 'null', nodeName: 'n0' });
    const { options } = translateBlockdevOptions({ driver: 'raw', 'node-name': 'r', file: 'n0' }, (name) => layer.findNode(name));
    expect((options as unknown as { file: unknown }).file).toBe(n);
    expect(desc(() => translateBlockdevOptions({ driver: 'raw', 'node-name': 'r', file: 'nx' }, none))).toBe("Cannot find device='nx' nor node-name='nx'");
  });

  it("refuses bad input with QEMU's texts", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ driver: 'null-co' }, "'node-name' must be specified for the root node"],
      [{ 'node-name': 'a' }, "Parameter 'driver' is missing"],
      [{ driver: 'nope', 'node-name': 'a' }, "Parameter 'driver' does not accept value 'nope'"],
      [{ driver: 'null-co', 'node-name': 'a', x: 1 }, "Parameter 'x' is unexpected"],
      [{ driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 1 } }, "Invalid parameter type for 'file.filename', expected: string"],
      [{ driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: '/x', aio: 'posix' } }, "Parameter 'aio' does not accept value 'posix'"],
      [{ driver: 'raw', 'node-name': 'a', file: { driver: 'file' } }, "Parameter 'file.filename' is missing"],
      [{ driver: 'null-co', 'node-name': '1a' }, "Invalid node-name: '1a'"],
      [{ driver: 'null-co', 'node-name': 'a', 'force-share': true }, 'force-share=on can only be used with read-only images'],
      [{ driver: 'luks', 'node-name': 'a' }, "Driver 'luks' is not supported by this server"],
      [{ driver: 'qcow2', 'node-name': 'a', file: 'x', encrypt: 'k' }, "Cannot find device='x' nor node-name='x'"],
    ];
    for (const [args, text] of cases) expect(desc(() => translateBlockdevOptions(args, none)), JSON.stringify(args)).toBe(text);
  });

  it('reads keyval strings by member type, and a JSON form and its keyval form translate alike', () => {
    expect(translateBlockdevOptions(keyvalObject('driver=null-co,node-name=n,size=0x100000,read-only=on', '--blockdev'), none, true).options).toEqual({ driver: 'null', nodeName: 'n', size: 1048576, readOnly: true });
    expect(desc(() => translateBlockdevOptions({ driver: 'null-co', 'node-name': 'n', 'read-only': 'maybe' }, none, true))).toBe("Parameter 'read-only' expects 'on' or 'off'");
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z][a-z0-9_-]{0,8}$/), fc.nat(), fc.boolean(), (name, size, ro) => {
        const json = translateBlockdevOptions({ driver: 'raw', 'node-name': name, 'read-only': ro, file: { driver: 'null-co', size } }, none).options;
        const kv = translateBlockdevOptions(keyvalObject(`driver=raw,node-name=${name},read-only=${ro ? 'on' : 'off'},file.driver=null-co,file.size=${size}`, 'x'), none, true).options;
        expect(kv).toEqual(json);
      }),
    );
  });
});

describe('keyvalObject', () => {
  it('nests dotted keys, keeps ,, as a comma, makes lists of numbered keys', () => {
    expect(keyvalObject('a=1,b.c=x,,y,b.d=2,l.0=p,l.1=q', 't')).toEqual({ a: '1', b: { c: 'x,y', d: '2' }, l: ['p', 'q'] });
    expect(() => keyvalObject('a=1,a.b=2', 't')).toThrow(/conflicts/);
  });
});
