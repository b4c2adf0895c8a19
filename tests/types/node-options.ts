// Type test, compiled by `npx tsc -p tsconfig.json --noEmit` (never run): the options of the
// built-in drivers are typed from their zod schemas, so a misspelt key or a literal value a
// driver does not take fails to compile; every `@ts-expect-error` below must find an error.
import {
  type BlockLayer,
  type BlockNode,
  type BuiltinDriveOptions,
  type BuiltinNodeOptions,
  type DriveOptions,
  type FileNodeOptions,
  type NodeOptions,
  openDrive,
  type Qcow2NodeOptions,
} from '../../src/index.js';

export async function typedOptions(layer: BlockLayer, node: BlockNode, loose: string): Promise<void> {
  // Correct forms of every built-in driver compile.
  await layer.openDrive({ driver: 'file', filename: 'disk.img', locking: 'off', aio: 'io_uring' });
  await layer.openDrive({ driver: 'memory', size: '64M', alignment: 4096 });
  await layer.openDrive({ driver: 'null', size: 1 << 20, latencyNs: 1000, readZeroes: false });
  await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: 'a.qcow2' }, backing: null, l2CacheSize: '1M' });
  await layer.openDrive({ driver: 'qcow2', file: node, 'data-file': { driver: 'file', filename: 'a.raw' }, snapshot: 'one' });
  await layer.openDrive({ driver: 'raw', offset: 512, file: { driver: 'memory', size: 4096, nodeName: 'm', readOnly: true } });
  await layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'read', code: 'EIO', once: true }], file: { driver: 'null' } });
  await layer.openDrive({ driver: 'http', url: 'https://example.com/disk.qcow2', readahead: '1M', transport: 'fetch' });
  await layer.openDrive({ driver: 'nbd', server: { type: 'unix', path: '/run/nbd.sock' }, export: 'disk', tls: { mode: 'psk', key: 'abcd' } });
  await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', 'key-secret': 'AQ==' });
  await layer.openDrive({ driver: 'throttle', throttleGroup: 'g', file: { driver: 'null' } });
  // A drive's own keys, with a temporary overlay (snapshot: true) over a driver whose own snapshot is a string.
  await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: 'a.qcow2' }, id: 'd0', throttle: { iopsTotal: 100 }, rerror: 'stop', snapshot: true });
  await layer.openNode({ driver: 'qcow2', file: { driver: 'memory', size: 1 << 20 } });
  await openDrive({ driver: 'memory', size: 512 });
  // Values known only by their type are checked when the node opens.
  await layer.openDrive({ driver: 'file', filename: 'disk.img', locking: loose });
  // Custom drivers (registerDriver) take any options, at the top and as a child of a built-in driver.
  await layer.openDrive({ driver: 'stripes', size: 4096, extent: 512 });
  await layer.openNode({ driver: 'qcow2', file: { driver: 'my-protocol', anything: 1 } });
  // Options typed as NodeOptions / DriveOptions (built at run time) go through as before.
  const built: DriveOptions = { driver: loose, id: 'x' };
  await layer.openDrive(built);
  const nodeOptions: NodeOptions = { driver: 'file', filename: 'x' };
  await layer.openNode(nodeOptions);
  // The typed forms as declared types.
  const file: FileNodeOptions = { driver: 'file', filename: 'x' };
  const image: Qcow2NodeOptions = { driver: 'qcow2', file };
  const any: BuiltinNodeOptions = image;
  const drive: BuiltinDriveOptions = { ...image, id: 'd1' };
  await layer.openNode(any);
  await layer.openDrive(drive);

  // Misspelt keys fail to compile, at the top and in children.
  // @ts-expect-error filenme is not an option of the file driver
  await layer.openDrive({ driver: 'file', filenme: 'x' });
  // @ts-expect-error filenme is not an option of the file driver
  await layer.openNode({ driver: 'file', filenme: 'x' });
  // @ts-expect-error filenme is not an option of the file driver
  await openDrive({ driver: 'file', filenme: 'x' });
  // @ts-expect-error a typo in the file child of a qcow2 node
  await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filenme: 'a.qcow2' } });
  // @ts-expect-error a typo two levels down (the file of a raw node under blkdebug)
  await layer.openDrive({ driver: 'blkdebug', file: { driver: 'raw', file: { driver: 'memory', szie: 512 } } });
  // @ts-expect-error backingFile is not an option of qcow2 (QEMU spells it backing)
  await layer.openDrive({ driver: 'qcow2', file: node, backingFile: 'base.qcow2' });
  // @ts-expect-error a typo in a drive's own key
  await layer.openDrive({ driver: 'memory', size: 512, rerorr: 'stop' });
  // @ts-expect-error the file driver takes no size
  await layer.openDrive({ driver: 'file', filename: 'x', size: 512, locking: loose });
  // Literal values a driver does not take fail too.
  // @ts-expect-error locking is on, off or auto
  await layer.openDrive({ driver: 'file', filename: 'x', locking: 'maybe' });
  // @ts-expect-error readOnly is a boolean
  await layer.openNode({ driver: 'memory', size: 512, readOnly: 'yes' });
  // @ts-expect-error transport is node or fetch
  await layer.openDrive({ driver: 'http', url: 'https://example.com/x', transport: 'curl' });
  // @ts-expect-error a required child is missing
  const noFile: Qcow2NodeOptions = { driver: 'qcow2' };
  // @ts-expect-error a typo in a declared typed form
  const typo: FileNodeOptions = { driver: 'file', filename: 'x', lockign: 'on' };
  void noFile;
  void typo;
}
