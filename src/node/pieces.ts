/** Pieces of one split request in flight at once (QEMU issues them one by one; a small window keeps large requests fast). */
export const PIECE_WINDOW = 4;

/**
 * Runs `count` pieces of one request, at most {@link PIECE_WINDOW} at a time. After the first
 * failure no further piece is issued; the result settles only when every issued piece has
 * settled, rejecting with the first error. So a request never settles while a piece of it
 * is still writing (QEMU: a request completes after all of its parts).
 */
export function runPieces(count: number, issue: (index: number) => Promise<void>): Promise<void> {
  if (count === 1) return issue(0);
  return new Promise<void>((resolve, reject) => {
    let next = 0;
    let active = 0;
    let failed = false;
    let error: unknown;
    const settled = () => {
      active--;
      if (!failed) while (next < count && active < PIECE_WINDOW) launch();
      if (active === 0) {
        if (failed) reject(error);
        else if (next >= count) resolve();
      }
    };
    const fail = (e: unknown) => {
      if (!failed) {
        failed = true;
        error = e;
      }
      settled();
    };
    const launch = () => {
      const index = next++;
      active++;
      let piece: Promise<void>;
      try {
        piece = issue(index);
      } catch (e) {
        piece = Promise.reject(e);
      }
      piece.then(settled, fail);
    };
    while (next < count && active < PIECE_WINDOW) launch();
  });
}
