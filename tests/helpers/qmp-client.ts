// A QMP client for tests that run the same script against qemu-storage-daemon and against our
// QmpServer: commands one at a time, events kept in arrival order (timestamps dropped) so the
// two daemons' event sequences can be compared.
import net from 'node:net';
import { join } from 'node:path';
import type { BlockLayer } from '../../src/layer.js';
import { QmpServer } from '../../src/qmp/server.js';
import { startQemuDaemon, stopPid } from './qemu-daemons.js';
import { Wakeups } from './wakeups.js';

/** A reply or an event as QMP sends it. */
export type QmpMessage = { return?: unknown; error?: { class: string; desc: string }; event?: string; data?: Record<string, unknown> };

/** An event without its timestamp. */
export type QmpEvent = { event: string; data?: Record<string, unknown> };

export class QmpClient {
  /** Every event received so far, in order. */
  readonly events: QmpEvent[] = [];
  private buffer = '';
  private readonly replies: QmpMessage[] = [];
  private readonly wakeups = new Wakeups();
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let at = this.buffer.indexOf('\n'); at >= 0; at = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, at).trim();
        this.buffer = this.buffer.slice(at + 1);
        if (line === '') continue;
        const m = JSON.parse(line) as QmpMessage & { timestamp?: unknown };
        if (m.event !== undefined) this.events.push(m.data === undefined ? { event: m.event } : { event: m.event, data: m.data });
        else this.replies.push(m);
      }
      this.wakeups.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wakeups.wake();
    });
  }

  /** Connects (retrying while the socket appears), reads the greeting, negotiates capabilities. */
  static async connect(path: string): Promise<QmpClient> {
    let socket: net.Socket | undefined;
    for (let i = 0; i < 200 && socket === undefined; i++) {
      socket = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.connect(path, () => resolve(s));
        s.on('error', () => resolve(undefined));
      });
      if (socket === undefined) await new Promise((r) => setTimeout(r, 25));
    }
    if (socket === undefined) throw new Error(`no QMP socket at ${path}`);
    const q = new QmpClient(socket);
    await q.reply(); // greeting
    const caps = await q.cmd('qmp_capabilities');
    if (caps.error) throw new Error(`qmp_capabilities: ${caps.error.desc}`);
    return q;
  }

  private until(test: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return this.wakeups.until(
      test,
      timeoutMs,
      () => (this.closed ? new Error(`QMP connection closed while waiting for ${what}`) : undefined),
      () => new Error(`timed out waiting for ${what}; events: ${JSON.stringify(this.events)}`),
    );
  }

  private async reply(): Promise<QmpMessage> {
    await this.until(() => this.replies.length > 0, 60_000, 'a reply');
    return this.replies.shift()!;
  }

  /** Sends a command; resolves with its reply (`return` or `error`). */
  cmd(execute: string, args?: Record<string, unknown>): Promise<QmpMessage> {
    this.socket.write(`${JSON.stringify(args === undefined ? { execute } : { execute, arguments: args })}\n`);
    return this.reply();
  }

  /** Sends a command that must succeed; resolves with its `return`. */
  async ok(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    const m = await this.cmd(execute, args);
    if (m.error) throw new Error(`${execute}: ${m.error.class}: ${m.error.desc}`);
    return m.return;
  }

  /** Waits for an event (after `from`, an index into {@link events}) matching `name` and `match`; resolves with it. */
  async waitEvent(name: string, match: (data: Record<string, unknown>) => boolean = () => true, timeoutMs = 60_000, from = 0): Promise<QmpEvent> {
    let found: QmpEvent | undefined;
    await this.until(
      () => {
        found = this.events.slice(from).find((e) => e.event === name && match(e.data ?? {}));
        return found !== undefined;
      },
      timeoutMs,
      `event ${name}`,
    );
    return found!;
  }

  /** Waits until job `id` reaches `status` (a JOB_STATUS_CHANGE event). */
  waitJobStatus(id: string, status: string, timeoutMs = 60_000): Promise<QmpEvent> {
    return this.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === id && d.status === status, timeoutMs);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A running daemon's QMP client and how to stop it. */
export interface QmpDaemon {
  qmp: QmpClient;
  stop(): Promise<void>;
}

/**
 * Starts qemu-storage-daemon with `args` (e.g. `--blockdev …`, `--nbd-server …`, `--export …`)
 * and a QMP monitor on a socket in `dir`; connected and negotiated.
 */
export async function startQsd(dir: string, args: string[], name = 'qsd'): Promise<QmpDaemon> {
  const path = join(dir, `${name}.qmp`);
  const pid = startQemuDaemon('qemu-storage-daemon', [...args, '--chardev', `socket,id=m,path=${path},server=on,wait=off`, '--monitor', 'chardev=m'], dir);
  const qmp = await QmpClient.connect(path);
  return {
    qmp,
    stop: async () => {
      qmp.close();
      await stopPid(pid);
    },
  };
}

/** Our QmpServer over `layer` on a socket in `dir`; connected and negotiated. */
export async function startOurQmp(layer: BlockLayer, dir: string, options: ConstructorParameters<typeof QmpServer>[1] = {}, name = 'ours'): Promise<QmpDaemon & { server: QmpServer }> {
  const server = new QmpServer(layer, options);
  const path = join(dir, `${name}.qmp`);
  await server.listen({ path });
  const qmp = await QmpClient.connect(path);
  return {
    qmp,
    server,
    stop: async () => {
      qmp.close();
      await server.close();
    },
  };
}
