/**
 * The one free-cluster search of qcow2 (QEMU's first fit from a free index): the image creator,
 * the writer's refcounts and the refcount rebuild all find their clusters with it.
 */

/** Refcounts of host clusters as a search reads them (0: free). */
export interface RefcountView {
  get(cluster: number): number;
}

/** The run of free clusters a search has found so far. */
export interface FreeRun {
  /** First cluster of the current run (meaningful once `length` > 0). */
  start: number;
  /** Clusters in the current run. */
  length: number;
  /** First free cluster the search saw, -1 for none yet (where the next search may start). */
  firstFree: number;
}

/** A search that has seen nothing yet, starting at `from`. */
export function newFreeRun(from: number, run: FreeRun = { start: 0, length: 0, firstFree: -1 }): FreeRun {
  run.start = from;
  run.length = 0;
  run.firstFree = -1;
  return run;
}

/**
 * Extends `run` over clusters [from, to) of `view` until it holds `count` free clusters in a
 * row; returns the cluster where it stopped (just past the run once it is complete, else `to`).
 * A search may go range by range (a refcount block at a time): the run carries over.
 */
export function extendFreeRun(view: RefcountView, from: number, to: number, count: number, run: FreeRun): number {
  let i = from;
  for (; i < to && run.length < count; i++) {
    if (view.get(i) === 0) {
      if (run.firstFree < 0) run.firstFree = i;
      if (run.length === 0) run.start = i;
      run.length++;
    } else run.length = 0;
  }
  return i;
}

/** Extends `run` over [from, to), clusters known to be free (a range no refcount block covers yet). */
export function extendFreeRunFree(from: number, to: number, run: FreeRun): void {
  if (to <= from) return;
  if (run.firstFree < 0) run.firstFree = from;
  if (run.length === 0) run.start = from;
  run.length += to - from;
}
