import type { Clock } from '../clock.js';
import type { Drive } from '../drive.js';
import type { NodeOptions } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';
import type { JobRegistry } from './registry.js';

/**
 * What a block job needs from the layer it runs in (the BlockLayer implements it): its clock,
 * its job list, nodes by name, new nodes (a mirror's or backup's target), and the pivot that
 * moves a node's users to another node. An interface, so job modules never import the layer.
 */
export interface JobHost {
  readonly clock: Clock;
  readonly jobs: JobRegistry;
  /** The open node with that node name. */
  findNode(name: string): BlockNode | undefined;
  /** Drives (internal ones included) whose root is `node`. */
  drivesOn(node: BlockNode): Drive[];
  /**
   * Moves every drive on `from` to `to`, each in a drained section; returns them. `inDrain`
   * (optional) runs while all of them are drained, right before they move (an active commit's last copy).
   */
  replaceNode(from: BlockNode, to: BlockNode, inDrain?: () => Promise<void>): Promise<Drive[]>;
  /** Whether a drive is one of the layer's listed drives (not an export's internal one). */
  isListedDrive(drive: Drive): boolean;
  /** The root node of the listed drive with that id. */
  driveRoot(id: string): BlockNode | undefined;
  /** Whether `node` is a root node: no node, job filter or running job above it (QEMU bdrv_is_root_node; see root-node.ts). */
  isRootNode(node: BlockNode): boolean;
  /** Opens a node graph the caller owns. */
  openNode(options: NodeOptions): Promise<BlockNode>;
}
