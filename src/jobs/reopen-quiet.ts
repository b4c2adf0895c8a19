// A node's mode switched while nothing of its users is in flight (QEMU reopens in a drained
// section): what stream and commit do to a read-only image they write, as QEMU's
// bdrv_reopen_set_read_only in stream_start, commit_start and commit_active_start.
import type { BlockNode } from '../node/node.js';
import type { JobHost } from './host.js';

/** Switches `node` to `readOnly` with the drives on every node of `users` (the chain above it) drained. */
export async function reopenQuiet(host: Pick<JobHost, 'drivesOn'>, users: readonly BlockNode[], node: BlockNode, readOnly: boolean): Promise<void> {
  if (node.readOnly === readOnly) return;
  const drives = [...new Set([...users, node].flatMap((n) => host.drivesOn(n)))];
  const ends = await Promise.all(drives.map((d) => d.drainBegin()));
  try {
    await node.reopen(readOnly);
  } finally {
    for (const end of ends) end();
  }
}

/**
 * Makes a read-only `node` read-write for a job; resolves to what makes it read-only again when
 * the job is done (a failure there is ignored, as QEMU ignores it: the job's own result counts).
 */
export async function readWriteForJob(host: Pick<JobHost, 'drivesOn'>, users: readonly BlockNode[], node: BlockNode): Promise<() => Promise<void>> {
  if (!node.readOnly) return async () => {};
  await reopenQuiet(host, users, node, false);
  return () => reopenQuiet(host, users, node, true).catch(() => undefined);
}
