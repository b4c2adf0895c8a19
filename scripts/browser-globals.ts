// Injected into the browser bundle (esbuild `inject`): the Node globals the portable core uses.
import { Buffer } from 'buffer';

type Immediate = { cancelled: boolean; fn: () => void };
const queue: Immediate[] = [];
const channel = new MessageChannel();
// (typed loosely: this file is type-checked against Node's MessagePort, but runs in browsers)
(channel.port1 as unknown as { onmessage: (() => void) | null }).onmessage = () => {
  const batch = queue.splice(0, queue.length);
  for (const item of batch) if (!item.cancelled) item.fn();
};

/** setImmediate on a MessageChannel: the next task, without setTimeout's 4 ms clamping. */
function setImmediate(fn: () => void): Immediate {
  const item = { cancelled: false, fn };
  if (queue.push(item) === 1) channel.port2.postMessage(0);
  return item;
}
function clearImmediate(item: Immediate | undefined): void {
  if (item) item.cancelled = true;
}

export { Buffer, clearImmediate, setImmediate };
