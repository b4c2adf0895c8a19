// Injected into the browser bundle (esbuild `inject`): the Node globals the portable core uses.
import { Buffer } from 'buffer';

type Immediate = { cancelled: boolean; refed: boolean; fn: () => void; ref(): Immediate; unref(): Immediate };
const queue: Immediate[] = [];
const channel = new MessageChannel();
// (typed loosely: this file is type-checked against Node's MessagePort, but runs in browsers)
(channel.port1 as unknown as { onmessage: (() => void) | null }).onmessage = () => {
  const batch = queue.splice(0, queue.length);
  for (const item of batch) if (!item.cancelled) item.fn();
};

/** setImmediate on a MessageChannel: the next task, without setTimeout's 4 ms clamping. */
function setImmediate(fn: () => void): Immediate {
  const item: Immediate = {
    cancelled: false,
    refed: true,
    fn,
    ref: () => {
      item.refed = true;
      return item;
    },
    unref: () => {
      item.refed = false;
      return item;
    },
  };
  if (queue.push(item) === 1) channel.port2.postMessage(0);
  return item;
}
function clearImmediate(item: Immediate | undefined): void {
  if (item) item.cancelled = true;
}

/**
 * The little of `process` the core touches (VirtualClock): nextTick runs on the next task, after
 * every microtask (what the clock relies on), and the active resources list says whether a
 * referenced immediate is waiting.
 */
const process = {
  env: {} as Record<string, string | undefined>,
  nextTick: (fn: () => void) => void setImmediate(fn),
  getActiveResourcesInfo: () => (queue.some((i) => !i.cancelled && i.refed) ? ['Immediate'] : []),
};

export { Buffer, clearImmediate, process, setImmediate };
