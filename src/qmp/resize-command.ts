/**
 * QMP block_resize (QEMU qmp_block_resize): resizes a node found by `device` (a drive id) or
 * `node-name`, shrinking included, in a drained section; QEMU's argument checks and error texts.
 */
import type { Drive } from '../drive.js';
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { jobFilterNodes } from '../jobs/job-filter.js';
import { isMirrorNode } from '../jobs/mirror.js';
import { type Args, generic, only, optInt, str } from './qapi-args.js';

/** What block_resize resizes: a drive's root (resized through the drive: drained, its event), or any node. */
interface ResizeSubject {
  node: BlockNode;
  drive?: Drive;
  /** The node is the `file` (or data file) of another: that parent keeps its size to itself. */
  parent?: { node: BlockNode; role: string };
}

/** The node QEMU's bdrv_lookup_bs(device, node-name) finds: the drive `device`'s root first, else the node `nodeName`. */
function lookup(layer: BlockLayer, device: string | undefined, nodeName: string | undefined): ResizeSubject | undefined {
  const drives = layer.listDrives().filter((d) => !d.closed);
  const byDevice = device === undefined ? undefined : drives.find((d) => d.id === device);
  let found: BlockNode | undefined = byDevice?.node;
  let parent: ResizeSubject['parent'];
  const seen = new Set<BlockNode>();
  const visit = (n: BlockNode) => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const [role, child] of n.children) {
      if (found === undefined && child.name === nodeName) found = child;
      if (child === found && role !== 'backing') parent ??= { node: n, role };
      visit(child);
    }
  };
  if (found === undefined && nodeName !== undefined) found = drives.find((d) => d.node.name === nodeName)?.node;
  for (const d of drives) visit(d.node);
  // Nodes added with blockdev-add (and exports' graphs): QEMU finds any named node.
  if (found === undefined && nodeName !== undefined) found = layer.findNode(nodeName);
  for (const n of layer.listNodes()) visit(n);
  if (found === undefined) return undefined;
  const drive = byDevice ?? drives.find((d) => d.node === found);
  return { node: found, drive, parent };
}

/** block_resize `{ device?, node-name?, size }`. */
export async function blockResize(layer: BlockLayer, args: Args): Promise<Record<string, never>> {
  const device = str(args, 'device', false);
  const nodeName = str(args, 'node-name', false);
  // QAPI int: past 2^53 the nearest double, which the node then refuses as not a safe integer.
  const size = optInt(args, 'size');
  if (size === undefined) throw generic("Parameter 'size' is missing");
  only(args, ['device', 'node-name', 'size']);
  const subject = lookup(layer, device, nodeName);
  if (subject === undefined) throw generic(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  if (size < 0) throw generic("Parameter 'size' expects a >0 size");
  const { node, drive, parent } = subject;
  // A running mirror's source or target (the source may sit below the job's filter, the drive's root):
  // QEMU's op blocker, and its message, which prints an absent device as glibc prints NULL.
  if (isMirrorNode(node) || (jobFilterNodes(layer.jobs).includes(node) && [...node.children.values()].some(isMirrorNode))) {
    throw generic(`Device '${device ?? '(null)'}' is in use`);
  }
  if (node.readOnly) throw generic('Image is read-only');
  if (parent) {
    throw generic(
      `Permission conflict on node '${node.name}': permissions 'resize' are both required by an unnamed block device (uses node '${node.name}' as 'root' child) and unshared by node '${parent.node.name}' (uses node '${node.name}' as '${parent.role}' child).`,
    );
  }
  try {
    if (drive !== undefined) await drive.resize(size, { shrink: true });
    else {
      const end = node.drainBegin();
      try {
        await node.truncate(size, { shrink: true });
      } finally {
        end();
      }
    }
  } catch (e) {
    if (isBlockError(e, 'EROFS')) throw generic('Image is read-only');
    throw e;
  }
  return {};
}
