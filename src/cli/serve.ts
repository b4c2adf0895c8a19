import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import { isWellFormedUtf16 } from '../drivers/nbd/protocol.js';
import { NbdServer } from '../nbd/server.js';
import { loadPskFile, loadQemuTlsCredsDir, type NbdTlsOptions } from '../drivers/nbd/tls.js';
import { driveStringToOptions, parseDriveString, splitQemuOpts, withAio } from '../options/drive-string.js';
import { isWellFormedId } from '../ids.js';
import { NbdExportManager } from '../qmp/exports.js';
import { QmpServer, removeStaleSocket } from '../qmp/server.js';
import type { ThrottleLimits } from '../throttle/limits.js';
import { LIMIT_FLAGS, num, parseLimitFlags, sizeFlag } from './limit-flags.js';
import { checkFormat, targetOptions } from './target.js';
import { applyQsdPlan, hasQsdOptions, parseQsdOptions, QSD_OPTIONS } from './serve-qsd-args.js';
import type { IoThread } from '../iothread/iothread.js';
import { placeOnIothreads } from '../iothread/placement.js';
import { startIothreads } from '../iothread/start.js';

export const SERVE_HELP = `usage: blocklayer serve [-x NAME] [-f FMT] [-r] [-B BITMAP …] [-A] [-p PORT] [-b ADDR] [-k SOCKET] [-e N] [--iops N …] [--drive STR …] [--qmp unix:PATH] [options] [IMAGE]
An NBD server for IMAGE and every --drive (qemu-nbd's flags where they apply).

  -x, --export-name NAME    export name of IMAGE (default the empty name)
  -f, --format FMT          image format (raw, qcow2); given, it is used without probing
  -r, --read-only           serve read-only
  -p, --port PORT           TCP port (10809; 0 picks a free port)
  -b, --bind ADDR           address to listen on (127.0.0.1)
  -k, --socket PATH         a unix socket instead of TCP
  -e, --shared N            most connections at once (16)
  -D, --description TEXT    export description
  -B, --bitmap NAME         serve IMAGE's dirty bitmap NAME as qemu:dirty-bitmap:NAME (repeatable)
  -A, --allocation-depth    serve IMAGE's qemu:allocation-depth context
  --group NAME              throttle group of IMAGE
  --drive STR               one more export: a QEMU -drive string (file=…,id=…,iops=…,group=…,export=NAME)
  --qmp unix:PATH           a QMP monitor
  --tls-creds DIR           TLS with x509 credentials (ca-cert.pem, server-cert.pem, server-key.pem)
  --tls-verify-peer         ask clients for a certificate
  --tls-psk DIR|FILE        TLS with pre-shared keys (keys.psk)
  --memory-budget SIZE      request payloads and unsent replies of all clients (256M)
  --aio threads|io_uring    the file driver's I/O engine
  --blockdev JSON|k=v,…     a node, as qemu-storage-daemon --blockdev (driver=qcow2,node-name=n0,file.driver=file,file.filename=…)
  --export type=nbd,id=…,node-name=…[,name=…][,writable=on][,bitmaps.0=…]   an export, as qemu-storage-daemon
  --nbd-server addr.type=inet,addr.host=…,addr.port=…|addr.type=unix,addr.path=…   where the NBD server listens
  --object throttle-group,id=…,x-iops-total=…   a throttle group
  --object iothread,id=…    a thread of its own for the exports that name it (--export …,iothread=ID)
  --chardev socket,id=…,path=…,server=on,wait=off --monitor chardev=…   a QMP monitor, as qemu-storage-daemon
  --iops N, --bps SIZE, …   limits of IMAGE by their QEMU names (bps and iops-size take sizes: 1M, 8k)
  -h, --help                this help`;

/** qemu-nbd's spellings where they apply; limits by their QEMU names as in `blocklayer bench`. */
const OPTIONS = {
  'export-name': { type: 'string', short: 'x' },
  format: { type: 'string', short: 'f' },
  'read-only': { type: 'boolean', short: 'r' },
  port: { type: 'string', short: 'p' },
  bind: { type: 'string', short: 'b' },
  socket: { type: 'string', short: 'k' },
  shared: { type: 'string', short: 'e' },
  description: { type: 'string', short: 'D' },
  bitmap: { type: 'string', short: 'B', multiple: true },
  'allocation-depth': { type: 'boolean', short: 'A' },
  group: { type: 'string' },
  drive: { type: 'string', multiple: true },
  qmp: { type: 'string' },
  'tls-creds': { type: 'string' },
  'tls-psk': { type: 'string' },
  'tls-verify-peer': { type: 'boolean' },
  'memory-budget': { type: 'string' },
  aio: { type: 'string' },
  ...QSD_OPTIONS,
  ...LIMIT_FLAGS,
} as const;

const PREFIX = 'blocklayer serve:';
const log = (line: string) => process.stderr.write(`${PREFIX} ${line}\n`);

/**
 * An export name from the command line. NBD names are UTF-8, and Node has already decoded argv,
 * turning bytes that are not UTF-8 into U+FFFD: a name holding U+FFFD is refused (it could not be
 * the bytes the user typed), as is one a client could not send (a lone surrogate).
 */
function cliExportName(name: string, what: string, field: string): string {
  if (name.includes('\uFFFD') || !isWellFormedUtf16(name)) {
    throw new BlockError('EINVAL', `${what}: ${JSON.stringify(name)} is not valid UTF-8 (U+FFFD stands for bytes that were not); export names are UTF-8`, { field });
  }
  return name;
}

/**
 * TLS credentials, which make TLS mandatory for every client (as QEMU's tls-creds):
 * `--tls-creds DIR` is a tls-creds-x509 directory (ca-cert.pem, server-cert.pem, server-key.pem),
 * `--tls-psk` a tls-creds-psk directory holding keys.psk, or the keys.psk file itself.
 */
async function tlsOptions(x509: string | undefined, psk: string | undefined, verifyPeer: boolean): Promise<NbdTlsOptions | undefined> {
  if (x509 !== undefined && psk !== undefined) throw new BlockError('EINVAL', '--tls-creds and --tls-psk: give one of them', { field: 'tls-creds' });
  if (verifyPeer && x509 === undefined) throw new BlockError('EINVAL', '--tls-verify-peer: needs --tls-creds', { field: 'tls-verify-peer' });
  if (x509 !== undefined) return loadQemuTlsCredsDir(x509, 'x509', { verifyPeer });
  if (psk === undefined) return undefined;
  const isDir = await stat(psk).then((st) => st.isDirectory(), () => false);
  return isDir ? loadQemuTlsCredsDir(psk, 'psk') : { mode: 'psk', identities: await loadPskFile(psk) };
}

/** Options to open a drive from IMAGE or a --drive string: format probed, rbd: targets, read-only if asked (http always is). */
async function driveOptions(target: string, format: string | undefined, readOnly: boolean): Promise<DriveOptions> {
  const base = { ...(await targetOptions(target, { format })) } as DriveOptions;
  const file = base.file as Record<string, unknown> | undefined;
  if (readOnly) {
    base.readOnly = true;
    if (file) file.readOnly = true;
  } else if (file?.driver !== 'http') {
    delete base.readOnly;
    if (file) delete file.readOnly;
  }
  return base;
}

/**
 * `--iops -1` as `--iops=-1`: parseArgs refuses a value that starts with a dash (in three lines);
 * joined, the value reaches the limit check, which names the flag in one line.
 */
function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = args[i + 1];
    const name = a.startsWith('--') ? a.slice(2) : undefined;
    const takesValue = name !== undefined && (OPTIONS as Record<string, { type: string }>)[name]?.type === 'string';
    if (takesValue && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/**
 * `--aio` (qemu-nbd's spelling): the file driver's I/O engine for IMAGE, and for each `--drive`
 * without its own `aio=`. `native` (Linux AIO) is accepted and leaves the default engine, as
 * `aio=native` in a -drive string does.
 */
function parseAio(v: string | undefined): 'threads' | 'io_uring' | undefined {
  if (v === undefined || v === 'native') return undefined;
  if (v === 'threads' || v === 'io_uring') return v;
  throw new BlockError('EINVAL', `--aio: '${v}' is not threads, io_uring or native`, { field: 'aio' });
}

function parsePort(v: string | undefined): number {
  if (v === undefined) return 10809;
  const n = num('port', v);
  if (n === undefined || !Number.isInteger(n) || n < 0 || n > 65535) throw new BlockError('EINVAL', `-p/--port: '${v}' is not a port number (0-65535)`, { field: 'port' });
  return n;
}

/**
 * `blocklayer serve`: an NBD server (qemu-nbd's spellings) for IMAGE and every `--drive`,
 * all in one BlockLayer so throttle groups are shared across exports; `--aio threads|io_uring`
 * picks the file driver's I/O engine (as qemu-nbd's `--aio`); `--qmp unix:PATH` adds a
 * QMP monitor (query-block, block_set_io_throttle, block-export-add/del, quit, …). Runs until
 * SIGINT/SIGTERM or QMP quit, then stops accepting, drains and flushes, closes, exits 0. Draining
 * lifts the limits (requests queued by throttling go at once, as in QEMU's drained sections), and
 * a drive paused by `werror=stop` is closed, failing its held requests with their error.
 */
export async function serveCommand(args: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({ args: joinNegativeValues(args), options: OPTIONS, allowPositionals: true, strict: true });
  if (positionals.length > 1) throw new BlockError('EINVAL', `unexpected argument '${positionals[1]}'`);
  const image = positionals[0];
  const drives = v.drive ?? [];
  const qsd = parseQsdOptions(v);
  if (image === undefined && drives.length === 0 && !hasQsdOptions(v)) throw new BlockError('EINVAL', 'usage: blocklayer serve IMAGE -x NAME [options] (or --drive file=…,id=… …, or --blockdev … --export …)');
  const format = checkFormat(v.format);
  const limits: ThrottleLimits = parseLimitFlags(v as Record<string, unknown>);
  const port = parsePort(v.port);
  const aio = parseAio(v.aio);
  const maxConnections = v.shared === undefined ? qsd.nbdServer?.maxConnections : num('shared', v.shared);
  if (maxConnections !== undefined && (!Number.isInteger(maxConnections) || maxConnections < 1)) {
    throw new BlockError('EINVAL', `-e/--shared: '${v.shared}' is not a positive integer`, { field: 'shared' });
  }
  let qmpPath: string | undefined = qsd.qmpPath;
  if (v.qmp !== undefined && qmpPath !== undefined) throw new BlockError('EINVAL', '--qmp and --monitor: give one of them', { field: 'qmp' });
  if (qsd.nbdServer !== undefined && (v.port !== undefined || v.socket !== undefined || v.bind !== undefined)) {
    throw new BlockError('EINVAL', '--nbd-server and -p/-b/-k: give one of them', { field: 'nbd-server' });
  }
  if (v.qmp !== undefined) {
    if (!v.qmp.startsWith('unix:') || v.qmp.length <= 'unix:'.length) throw new BlockError('EINVAL', `--qmp: '${v.qmp}' is not unix:PATH`, { field: 'qmp' });
    qmpPath = v.qmp.slice('unix:'.length);
  }
  if (image === undefined && (v['export-name'] !== undefined || Object.keys(limits).length > 0 || v.bitmap !== undefined || v['allocation-depth'] === true)) {
    throw new BlockError('EINVAL', '-x, -B, -A and limit flags apply to IMAGE, and no IMAGE was given');
  }

  // Exports in iothreads take their graphs there; the rest of the plan stays on this thread.
  const placement = placeOnIothreads(qsd);
  Object.assign(qsd, placement.main);
  if (placement.iothreads.length > 0 && (v['tls-creds'] !== undefined || v['tls-psk'] !== undefined)) {
    throw new BlockError('ENOTSUP', '--object iothread: TLS connections cannot be handed to an iothread yet', { field: 'object' });
  }
  const tls = await tlsOptions(v['tls-creds'], v['tls-psk'], v['tls-verify-peer'] ?? false);
  const layer = new BlockLayer();
  let memoryBudget: number | undefined;
  if (v['memory-budget'] !== undefined) {
    memoryBudget = sizeFlag('memory-budget', v['memory-budget']);
    if (!Number.isSafeInteger(memoryBudget) || memoryBudget <= 0) {
      throw new BlockError('EINVAL', `--memory-budget: '${v['memory-budget']}' is not a size (e.g. 256M)`, { field: 'memory-budget' });
    }
  }
  const server = new NbdServer({
    ...(maxConnections === undefined ? {} : { maxConnections }),
    ...(tls ? { tls } : {}),
    ...(memoryBudget === undefined ? {} : { memoryBudget }),
  });
  const manager = new NbdExportManager(layer, server);
  let qmp: QmpServer | undefined;
  let iothreads: IoThread[] = [];
  try {
    if (image !== undefined) {
      const name = cliExportName(v['export-name'] ?? '', '-x/--export-name', 'export-name');
      const opts = withAio(await driveOptions(image, format, v['read-only'] ?? false), aio);
      if (isWellFormedId(name)) opts.id = name;
      if (Object.keys(limits).length > 0 || v.group !== undefined) opts.throttle = { ...limits, ...(v.group !== undefined ? { group: v.group } : {}) };
      const drive = await layer.openDrive(opts);
      server.addExport({
        name,
        drive,
        readOnly: drive.readOnly,
        ...(v.description !== undefined ? { description: v.description } : {}),
        ...(v.bitmap !== undefined ? { bitmaps: v.bitmap } : {}),
        ...(v['allocation-depth'] === true ? { allocationDepth: true } : {}),
      });
      manager.adopt(name === '' ? drive.id : name, name, drive);
    }
    for (const s of drives) {
      let p: ReturnType<typeof parseDriveString>;
      let o: DriveOptions;
      let exportName: string | undefined;
      try {
        // `export=NAME` is ours (the export's name); the rest is a QEMU -drive string.
        const pairs = splitQemuOpts(s);
        for (const [k, val] of pairs) if (k === 'export') exportName = val;
        const drive = pairs
          .filter(([k]) => k !== 'export')
          .map(([k, val]) => `${k}=${val.replaceAll(',', ',,')}`)
          .join(',');
        p = parseDriveString(drive);
        o = driveStringToOptions(drive);
      } catch (e) {
        if (e instanceof BlockError) throw new BlockError(e.code, `--drive '${s}': ${e.message}`, { field: e.field, cause: e });
        throw e;
      }
      const { driver: _d, file: _f, readOnly, ...rest } = o;
      const name = exportName ?? p.id;
      if (name === undefined) throw new BlockError('EINVAL', `--drive '${s}': id= or export= required (it names the export)`, { field: 'id' });
      cliExportName(name, `--drive '${s}': ${exportName !== undefined ? 'export=' : 'id='}`, exportName !== undefined ? 'export' : 'id');
      const opts = withAio({ ...(await driveOptions(p.filename!, p.format, readOnly ?? false)), ...rest }, p.aio ?? aio) as DriveOptions;
      const drive = await layer.openDrive(opts);
      server.addExport({ name, drive, readOnly: drive.readOnly });
      manager.adopt(p.id ?? drive.id, name, drive);
    }
    await applyQsdPlan(qsd, layer, manager);
    iothreads = await startIothreads(placement, server, manager, { ...(maxConnections === undefined ? {} : { maxConnections }), ...(memoryBudget === undefined ? {} : { memoryBudget }) });
    const listen = qsd.nbdServer?.listen ?? (v.socket !== undefined ? { path: v.socket } : { host: v.bind ?? '127.0.0.1', port });
    // A socket left by a serve that was killed is replaced; a live one or any other file is not.
    if ('path' in listen) await removeStaleSocket(listen.path);
    const where = await server.listen(listen);
    if (qmpPath !== undefined) {
      qmp = new QmpServer(layer, { exports: manager });
      await qmp.listen({ path: qmpPath });
    }
    const at = 'path' in where ? `unix:${where.path}` : `${where.host}:${where.port}`;
    const names = server.exportNames.map((n) => `'${n}'`).join(', ');
    log(`listening on ${at}, exports ${names}${qmpPath !== undefined ? `, QMP on unix:${qmpPath}` : ''}`);
  } catch (e) {
    await qmp?.close();
    await server.close();
    for (const t of iothreads) await t.close();
    await layer.close();
    throw e;
  }

  const who = (c: { address: string; port?: number }) => (c.port === undefined ? c.address : `${c.address}:${c.port}`);
  /** One log line per event, whatever a message holds. */
  const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' ').trim();
  server.on('connect', (c) => log(`${who(c)} connected to '${c.export}'`));
  server.on('disconnect', (c) => c.reason !== 'handed to its iothread' && log(`${who(c)} disconnected${c.export !== null ? ` from '${c.export}'` : ''}${c.reason ? ` (${oneLine(c.reason)})` : ''}`));
  server.on('error', ({ error, client }) => log(`${client ? `${who(client)}: ` : ''}${oneLine(error.message)}`));
  for (const t of iothreads) {
    t.on('connect', (c) => log(`${who(c)} connected to '${c.export}' (iothread ${t.id})`));
    t.on('disconnect', (c) => log(`${who(c)} disconnected${c.export !== null ? ` from '${c.export}'` : ''}${c.reason ? ` (${oneLine(c.reason)})` : ''}`));
    t.on('error', ({ message, client }) => log(`${client ? `${who(client)}: ` : ''}${oneLine(message)}`));
  }
  server.on('full', (c) => {
    const n = c.maxConnections;
    if (c.waiting) log(`${who(c)} waits for a free connection: ${n} connections at most (-e ${n}); it is served when a client leaves`);
    else log(`refused a connection from ${who(c)}: ${n} connections at most (-e ${n}) and ${n} already waiting`);
  });

  let onSignal: (sig: NodeJS.Signals) => void = () => {};
  const reason = await new Promise<string>((resolve) => {
    onSignal = (sig) => resolve(sig);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    qmp?.once('quit', () => resolve('QMP quit'));
  });
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  // A second signal while draining ends the process at once.
  const force = () => process.exit(1);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  log(`${reason}: shutting down (draining in-flight requests)`);
  // A drive paused by a stop error policy holds its failed requests for QMP cont, which will not
  // come now: closing it fails them with their error (as Drive.close() does), so their clients
  // get a reply and the server's close can finish. So is a drive that pauses while draining.
  const closePaused = (d: Drive) => setImmediate(() => d.close().catch((e: Error) => log(`closing ${d.id}: ${e.message}`)));
  for (const d of layer.listDrives()) {
    if (d.isPaused) closePaused(d);
    else d.once('paused', () => closePaused(d));
  }
  let code = 0;
  try {
    await qmp?.close();
    await server.close();
    for (const t of iothreads) await t.close();
    await layer.close();
  } catch (e) {
    log(`error while shutting down: ${(e as Error).message}`);
    code = 1;
  }
  log('shut down');
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
  return code;
}
