// Waiting for a server process to accept connections on a local port.
import net from 'node:net';

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now. */
function accepts(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Polls until something accepts on `port`; throws after `ms`, or as soon as `gone()` says the
 * server has exited (with `why()` in the message).
 */
export async function waitForPort(port: number, ms = 10_000, gone: () => boolean = () => false, why: () => string = () => ''): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (gone()) throw new Error(`server exited: ${why()}`);
    if (await accepts(port)) return;
    if (Date.now() > end) throw new Error(`nothing accepts on port ${port}: ${why()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
