/** Waits for every promise, then rethrows the first failure. */
export async function settleAll(list: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(list);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
