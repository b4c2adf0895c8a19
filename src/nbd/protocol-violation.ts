/** The client broke the protocol: it is disconnected. */
export class ProtocolViolation extends Error {
  override readonly name = 'NbdProtocolError';
}
