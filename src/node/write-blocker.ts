/** What the rule needs of a node (a BlockNode; no import of it: node.ts uses this module). */
interface GraphNode<N> {
  readonly readOnly: boolean;
  readonly children: ReadonlyMap<string, N>;
}

/**
 * The read-only node a write on `node` would reach (the node itself, or one below it through a
 * child other than `backing`), or undefined when writes can go all the way down (QEMU: taking
 * the WRITE permission on `node` would fail with "Block node is read-only").
 */
export function writeBlocker<N extends GraphNode<N>>(node: N): N | undefined {
  if (node.readOnly) return node;
  for (const [role, child] of node.children) {
    if (role === 'backing') continue;
    const blocker = writeBlocker(child);
    if (blocker !== undefined) return blocker;
  }
  return undefined;
}
