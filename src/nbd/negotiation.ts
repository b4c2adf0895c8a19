import * as P from '../drivers/nbd/protocol.js';
import { type NbdExport, transmissionFlags } from './export.js';
import { contextsOf } from './export-contexts.js';
import { MetaSelection } from './meta-contexts.js';
import { ProtocolViolation } from './protocol-violation.js';
import { agreedSelection, type HandedConnection } from './handover.js';

/** Largest option data accepted during the handshake (names are at most 4 KiB; meta context queries a few). */
const MAX_OPTION_LENGTH = 64 * 1024;
/** Preferred block size advertised in NBD_INFO_BLOCK_SIZE. */
const PREFERRED_BLOCK_SIZE = 4096;
const GREETING = P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);

/** What the option haggling needs to know of the server. */
export interface NegotiationHost {
  findExport(name: string): NbdExport | undefined;
  allExports(): NbdExport[];
  /** STARTTLS can be offered (credentials are set). */
  readonly tlsAvailable: boolean;
  /** Every option but STARTTLS and ABORT is refused until TLS is up. */
  readonly tlsRequired: boolean;
  readonly maxRequest: number;
  readonly maxConnections: number;
}

/**
 * What a step of the handshake asks of the connection: read `need` more bytes and step again;
 * go to transmission (an export is selected); hang up (the client aborted); or upgrade to TLS
 * (STARTTLS was accepted: the connection acknowledges it, runs the TLS handshake and calls
 * {@link Negotiation.tlsStarted}).
 */
export type NegotiationStep = 'more' | 'selected' | 'abort' | 'starttls';

/**
 * The server side of the fixed-newstyle handshake as a state machine over plain bytes: the
 * client flags, then option headers and their data, each handed to {@link take} in exactly
 * {@link need} bytes. Replies go out through `send`, one whole frame per call. A client that
 * breaks the protocol makes `take` throw a {@link ProtocolViolation}.
 */
export class Negotiation {
  private phase: 'flags' | 'header' | 'data' | 'done' = 'flags';
  private option = 0;
  /** Bytes the next {@link take} wants. */
  need = P.CLIENT_FLAGS_SIZE;
  /** The client asked for no padding after NBD_OPT_EXPORT_NAME's reply. */
  noZeroes = false;
  structured = false;
  tlsActive = false;
  /** The meta contexts SET_META_CONTEXT selected, and the export they were set for. */
  meta: MetaSelection | null = null;
  /** The export chosen by NBD_OPT_GO or NBD_OPT_EXPORT_NAME. */
  selected: NbdExport | null = null;

  constructor(
    private readonly host: NegotiationHost,
    private readonly send: (frame: Uint8Array) => void,
  ) {}

  /** The server's first bytes: magic, and fixed newstyle with no zeroes offered (one buffer for every connection: it is only ever written out). */
  static greeting(): Buffer {
    return GREETING;
  }

  /** The next bytes will be an option header: the moment to hold back a client that does not read its replies. */
  get awaitingOption(): boolean {
    return this.phase === 'header';
  }

  /** base:allocation was negotiated for the selected export. */
  get allocation(): boolean {
    return this.meta?.allocation === true;
  }

  /** Takes on what another thread's handshake agreed (a connection handed over): the export is selected, or gone. */
  adopt(c: HandedConnection): NegotiationStep {
    const e = this.host.findExport(c.exportName);
    if (e === undefined) return 'abort';
    this.phase = 'done';
    this.selected = e;
    this.structured = c.structured;
    this.meta = agreedSelection(e, contextsOf(e), c);
    return 'selected';
  }

  /** Consumes exactly {@link need} bytes. */
  take(bytes: Buffer): NegotiationStep {
    switch (this.phase) {
      case 'flags': {
        const clientFlags = P.decodeClientFlags(bytes);
        if (!(clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE)) throw new ProtocolViolation('client does not speak fixed newstyle (oldstyle and plain newstyle are refused)');
        if (clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
        this.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.expectHeader();
        return 'more';
      }
      case 'header': {
        let header: P.OptionHeader;
        try {
          header = P.decodeOptionHeader(bytes);
        } catch (e) {
          if (e instanceof P.NbdProtocolError) throw new ProtocolViolation(e.message);
          throw e;
        }
        const { option, length } = header;
        if (length > MAX_OPTION_LENGTH) throw new ProtocolViolation(`option ${option}: ${length} bytes of data exceed ${MAX_OPTION_LENGTH}`);
        this.option = option;
        this.phase = 'data';
        this.need = length;
        return 'more';
      }
      case 'data': {
        this.expectHeader();
        const step = this.handle(this.option, bytes);
        if (step === 'selected' || step === 'abort') {
          this.phase = 'done';
          this.need = 0;
        }
        return step;
      }
      case 'done':
        throw new Error('negotiation: already over');
    }
  }

  /** TLS is up: nothing agreed in plain text carries over into the TLS session. */
  tlsStarted(): void {
    this.tlsActive = true;
    this.structured = false;
    this.meta = null;
  }

  private expectHeader(): void {
    this.phase = 'header';
    this.need = P.OPTION_HEADER_SIZE;
  }

  private handle(option: number, data: Buffer): NegotiationStep {
    if (this.host.tlsRequired && !this.tlsActive && option !== P.NBD_OPT_STARTTLS && option !== P.NBD_OPT_ABORT) {
      // EXPORT_NAME has no error reply: the only refusal is to hang up.
      if (option === P.NBD_OPT_EXPORT_NAME) throw new ProtocolViolation('NBD_OPT_EXPORT_NAME before TLS, which this server requires');
      this.replyError(option, P.NBD_REP_ERR_TLS_REQD, `option ${option} needs TLS: send NBD_OPT_STARTTLS first`);
      return 'more';
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME:
        return this.exportName(data);
      case P.NBD_OPT_ABORT:
        this.reply(option, P.NBD_REP_ACK);
        return 'abort';
      case P.NBD_OPT_LIST:
        if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return 'more';
        }
        for (const e of this.host.allExports()) this.reply(option, P.NBD_REP_SERVER, P.encodeServerEntry(e.name, e.description ?? ''));
        this.reply(option, P.NBD_REP_ACK);
        return 'more';
      case P.NBD_OPT_STARTTLS:
        if (!this.host.tlsAvailable) {
          this.replyError(option, P.NBD_REP_ERR_POLICY, 'TLS is not available on this server');
        } else if (this.tlsActive) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'TLS is already negotiated');
        } else if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
        } else {
          return 'starttls';
        }
        return 'more';
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return 'more';
        }
        this.structured = true;
        this.reply(option, P.NBD_REP_ACK);
        return 'more';
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        this.metaContext(option, data);
        return 'more';
      default:
        this.replyError(option, P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return 'more';
    }
  }

  private exportName(data: Buffer): NegotiationStep {
    let name: string;
    try {
      name = P.decodeUtf8(data, 'NBD_OPT_EXPORT_NAME: the name');
    } catch (e) {
      // No error reply exists for this option: the refusal is to hang up.
      throw new ProtocolViolation((e as Error).message);
    }
    const e = this.host.findExport(name);
    // No error reply exists for this option: an unknown name ends the connection.
    if (!e) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME: no export named '${name.slice(0, 64)}'`);
    this.select(e);
    this.send(P.encodeExportNameReply(e.drive.length, transmissionFlags(e, this.host.maxConnections), this.noZeroes));
    return 'selected';
  }

  private infoOrGo(option: number, data: Buffer): NegotiationStep {
    let req: P.InfoRequest;
    try {
      req = P.decodeInfoRequest(data);
    } catch (e) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
      return 'more';
    }
    const e = this.host.findExport(req.name);
    if (!e) {
      this.replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.name.slice(0, 64)}'`);
      return 'more';
    }
    this.reply(option, P.NBD_REP_INFO, P.encodeInfoExport(e.drive.length, transmissionFlags(e, this.host.maxConnections)));
    if (req.requests.includes(P.NBD_INFO_NAME)) this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, e.name));
    if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && e.description) {
      this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, e.description));
    }
    // Sent whether asked or not: any alignment works (minimum 1), and the client learns the largest request.
    this.reply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(1, PREFERRED_BLOCK_SIZE, this.host.maxRequest));
    this.reply(option, P.NBD_REP_ACK);
    if (option === P.NBD_OPT_INFO) return 'more';
    this.select(e);
    return 'selected';
  }

  private metaContext(option: number, data: Buffer): void {
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    // Only with structured replies, LIST too (QEMU lists to any client: kept stricter here).
    if (!this.structured) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, 'metadata contexts need NBD_OPT_STRUCTURED_REPLY first');
      return;
    }
    let req: P.MetaContextRequest;
    try {
      req = P.decodeMetaContextRequest(data);
    } catch (e) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
      return;
    }
    const e = this.host.findExport(req.exportName);
    if (!e) {
      // A failed SET leaves nothing selected (QEMU clears the selection before it looks).
      if (set) this.meta = null;
      this.replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.exportName.slice(0, 64)}'`);
      return;
    }
    const selection = MetaSelection.match(req.exportName, contextsOf(e), req.queries, !set);
    for (const c of selection.replies(!set)) this.reply(option, P.NBD_REP_META_CONTEXT, P.encodeMetaContext(c.id, c.name));
    if (set) this.meta = selection;
    this.reply(option, P.NBD_REP_ACK);
  }

  private select(e: NbdExport): void {
    this.selected = e;
    // Contexts chosen for another export do not carry over, nor to an export replaced meanwhile under the same name.
    if (this.meta && (this.meta.exportName !== e.name || this.meta.contexts !== contextsOf(e))) this.meta = null;
  }

  private reply(option: number, type: number, data?: Uint8Array): void {
    this.send(P.encodeOptionReply(option, type, data));
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8'));
  }
}
