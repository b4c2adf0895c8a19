import type net from 'node:net';
import tls from 'node:tls';
import * as P from '../drivers/nbd/protocol.js';
import { ReaderClosed, type SocketReader } from '../drivers/nbd/reader.js';
import { type NbdTlsSetup, peerVerifyError, tlsErrorText } from '../drivers/nbd/tls.js';
import { ProtocolViolation } from './protocol-violation.js';

/**
 * Acknowledges NBD_OPT_STARTTLS on the plain socket, then runs the TLS handshake over it.
 * `adopt` gets the TLS socket before the handshake starts, so the connection reads from it and
 * watches its errors from the first byte. A failed handshake ends the connection (no way back).
 */
export async function upgradeToTls(plain: net.Socket, reader: SocketReader, setup: NbdTlsSetup, adopt: (secure: tls.TLSSocket) => void): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    plain.write(P.encodeOptionReply(P.NBD_OPT_STARTTLS, P.NBD_REP_ACK), (e) => (e ? reject(new ReaderClosed(`STARTTLS reply: ${e.message}`)) : resolve()));
  });
  const early = reader.detach();
  // The client must wait for the ACK before its ClientHello: bytes already here are not TLS.
  if (early.byteLength !== 0) throw new ProtocolViolation('data sent after NBD_OPT_STARTTLS before its reply');
  const secure = new tls.TLSSocket(plain, setup.options);
  adopt(secure);
  await new Promise<void>((resolve, reject) => {
    const done = (e?: Error) => {
      secure.off('secure', onSecure);
      secure.off('error', onError);
      secure.off('close', onClose);
      if (e) reject(e);
      else resolve();
    };
    const onSecure = () => done();
    const onError = (e: Error) => done(new ProtocolViolation(`TLS handshake failed: ${tlsErrorText(e)}`));
    const onClose = () => done(new ReaderClosed('connection closed during the TLS handshake'));
    secure.on('secure', onSecure);
    secure.on('error', onError);
    secure.on('close', onClose);
  });
  const refused = setup.verifyPeer ? peerVerifyError(secure) : null;
  if (refused !== null) throw new ProtocolViolation(`TLS handshake failed: client certificate refused: ${refused}`);
}
