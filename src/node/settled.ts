// The promise a synchronous driver returns for work already done (a file of its own: the node's
// bitmaps test for it, and the driver contract imports the node).

/**
 * What a driver's read or write may return when the work is done before the call returns (a
 * synchronous handle): a Drive then completes the request at once, one promise reaction fewer
 * per request. Any other resolved promise means the same, only without the shortcut.
 */
export const SETTLED: Promise<void> = Promise.resolve();
