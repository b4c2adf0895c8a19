import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const OPENSSL_CNF = `[req]
distinguished_name=dn
[dn]
[ca]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
[server]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
[client]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
`;

/**
 * A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, laid out as
 * QEMU's tls-creds-x509 directory (which libnbd's tls-certificates also reads).
 */
export function makeCerts(dir: string): void {
  const cnf = path.join(dir, 'openssl.cnf');
  fs.writeFileSync(cnf, OPENSSL_CNF);
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  o(['req', '-x509', ...ec, '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=blocklayer test CA', '-config', cnf, '-extensions', 'ca']);
  for (const who of ['server', 'client']) {
    o(['req', ...ec, '-keyout', `${who}-key.pem`, '-out', `${who}.csr`, '-subj', `/CN=${who === 'server' ? 'localhost' : 'client'}`, '-config', cnf]);
    o(['x509', '-req', '-in', `${who}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-set_serial', who === 'server' ? '1' : '2', '-out', `${who}-cert.pem`, '-days', '2', '-extfile', cnf, '-extensions', who]);
  }
  // A client certificate from another CA, which the server must not accept.
  o(['req', '-x509', ...ec, '-keyout', 'rogue-ca-key.pem', '-out', 'rogue-ca-cert.pem', '-days', '2', '-subj', '/CN=rogue CA', '-config', cnf, '-extensions', 'ca']);
  o(['req', ...ec, '-keyout', 'rogue-key.pem', '-out', 'rogue.csr', '-subj', '/CN=client', '-config', cnf]);
  o(['x509', '-req', '-in', 'rogue.csr', '-CA', 'rogue-ca-cert.pem', '-CAkey', 'rogue-ca-key.pem', '-set_serial', '3', '-out', 'rogue-cert.pem', '-days', '2', '-extfile', cnf, '-extensions', 'client']);
}

