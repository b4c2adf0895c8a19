import type net from 'node:net';
import type { ReadWaiter, SocketReader } from '../drivers/nbd/reader.js';
import type { HandshakeReplies } from './handshake-replies.js';
import type { Negotiation, NegotiationStep } from './negotiation.js';

/** Unsent option replies past which the server stops reading options until the client takes them. */
export const HANDSHAKE_BACKLOG = 256 * 1024;
/** Handshake reply bytes gathered before they are written even though more options are here already. */
export const HANDSHAKE_FLUSH = 64 * 1024;

/** Where the option haggling stopped: a step for the connection, or 'backlog' (wait until the socket drains). */
export type OptionsOutcome = Exclude<NegotiationStep, 'more'> | 'backlog';

/**
 * Takes the option bytes received so far into `neg`, synchronously. Replies gather in `pending`
 * and are written before the haggling waits for the client. Returns null when it waits for bytes:
 * the reader then calls `w` (and this is called again); otherwise the outcome the connection acts
 * on, with the replies so far written. Throws what the negotiation throws (a ProtocolViolation),
 * and the reader's reason once it has ended. `stopping`: the connection is stopping (no backlog wait).
 */
export function stepOptions(neg: Negotiation, reader: SocketReader, pending: HandshakeReplies, socket: net.Socket, stopping: boolean, w: ReadWaiter): OptionsOutcome | null {
  for (;;) {
    // A client that sends options without reading the replies must not make them pile up here.
    if (neg.awaitingOption) {
      if (pending.bytes >= HANDSHAKE_FLUSH) pending.flush(socket);
      if (!stopping && !socket.destroyed && socket.writableLength > HANDSHAKE_BACKLOG) return 'backlog';
    }
    // The bytes of options sent together are here already: their replies wait for the next flush.
    const bytes = reader.readNow(neg.need);
    if (bytes === null) {
      pending.flush(socket);
      if (!reader.whenBuffered(neg.need, w)) return null;
      continue;
    }
    const step = neg.take(bytes);
    if (step === 'more') continue;
    pending.flush(socket);
    return step;
  }
}
