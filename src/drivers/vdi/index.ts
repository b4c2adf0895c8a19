import { type DriverInstance, defineDriver } from '../../node/driver.js';
import { BlockMap, checkBlockMap } from './block-map.js';
import { vdiCheck } from './check.js';
import { vdiCreator } from './create.js';
import { vdiFacts } from './facts.js';
import { blockMapBytes, parseVdiHeader } from './header.js';
import { vdiInstance } from './instance.js';
import * as L from './limits.js';

/** VirtualBox's VDI format (QEMU `vdi`): dynamic and static images of version 1.1, 1 MiB blocks; reads, writes, creation, check. */
export const vdiDriver = defineDriver({
  name: vdiFacts.name,
  capabilities: vdiFacts.capabilities,
  schema: vdiFacts.schema(),
  probe: vdiFacts.probe,
  children: vdiFacts.children,
  create: vdiCreator,
  check: vdiCheck,
  async open(ctx): Promise<DriverInstance> {
    const file = ctx.children.get('file')!;
    const fileLength = file.length;
    const head = new Uint8Array(L.HEADER_BYTES);
    await file.read(0, head.subarray(0, Math.min(L.HEADER_BYTES, fileLength)));
    const h = parseVdiHeader(head.subarray(0, Math.min(L.HEADER_BYTES, fileLength)), fileLength);
    const map = new BlockMap(new Uint8Array(blockMapBytes(h.blocksInImage)), h.blocksInImage);
    if (map.bytes.length > 0) await file.read(h.offsetBmap, map.bytes);
    const facts = checkBlockMap(map, h, fileLength);
    return vdiInstance({ nodeName: ctx.nodeName, file, h, map, nextIndex: facts.nextIndex, writable: !ctx.readOnly });
  },
});
