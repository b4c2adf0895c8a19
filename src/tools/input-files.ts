import type { BlockNode } from '../node/node.js';

/**
 * Every host file a node graph reads: the `filename` of each `file` node under `node`, through
 * all children (protocol file, backing chain, external data file), each once, in graph order.
 */
export function inputFiles(node: BlockNode): string[] {
  const files: string[] = [];
  const seen = new Set<BlockNode>();
  const walk = (n: BlockNode) => {
    if (seen.has(n)) return;
    seen.add(n);
    const filename = n.options.filename;
    if (n.driver.name === 'file' && typeof filename === 'string' && !files.includes(filename)) files.push(filename);
    for (const child of n.children.values()) walk(child);
  };
  walk(node);
  return files;
}
