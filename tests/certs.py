"""Test certificates made with `cryptography`: a CA, a broker certificate for localhost and
127.0.0.1, client certificates (good, from another CA, expired), PEM files as Kafka's
`ssl.keystore.type=PEM` reads them."""
import datetime
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(**parts):
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts.items()])


def _cert(subject, key, issuer, issuer_key, *, ca=False, server=False, days=(-1, 30), client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password=None):
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class Certs:
    """Everything under `dir`; attributes are file paths (str)."""

    KEY_PASSWORD = "keystore-secret"

    def __init__(self, dir: Path):
        dir.mkdir(parents=True, exist_ok=True)
        self.dir = dir
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name(CN="ringmq test CA"), ca_key, _name(CN="ringmq test CA"), ca_key, ca=True)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other = _cert(_name(CN="another CA"), other_key, _name(CN="another CA"), other_key, ca=True)
        self.ca = self._write("ca.pem", _pem(ca))
        self._ca, self._ca_key = ca, ca_key
        # The broker: key (encrypted, ssl.key.password) and chain in one PEM keystore.
        self.keystore = self.server_keystore("server-keystore.pem", "localhost")
        # Clients.
        self.client_cert, self.client_key = self._client("alice", ca, ca_key)
        self.other_ca_cert, self.other_ca_key = self._client("mallory", other, other_key, prefix="other")
        self.expired_cert, self.expired_key = self._client("old", ca, ca_key, prefix="expired", days=(-30, -1))

    def v1_client(self, cn="legacy"):
        """A client certificate as the seeds' openssl recipe makes it: `openssl x509 -req`
        without extensions, so X.509 v1 (signed by the test CA)."""
        import subprocess
        ca_key = self._write("ca.key", _key_pem(self._ca_key))
        key, csr, cert = (str(self.dir / f"{cn}.{ext}") for ext in ("key", "csr", "pem"))
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
                        "-CAcreateserial", "-days", "30", "-out", cert], check=True, capture_output=True)
        return cert, key

    def _write(self, name, data):
        p = self.dir / name
        p.write_bytes(data)
        return str(p)

    def server_keystore(self, name, cn, org="ringmq", client=False):
        """A keystore for a server; `client`: also usable as a client certificate (a
        node's own, for mutual TLS between nodes)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(O=org, CN=cn), key, self._ca.subject, self._ca_key, server=True, client=client)
        return self._write(name, _key_pem(key, self.KEY_PASSWORD) + _pem(cert))

    def server_pair(self, name, cn="localhost"):
        """A server certificate (also good for client auth) and its unencrypted key, as
        two PEM files: what openssl and keytool turn into PKCS12 and JKS stores."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(O="ringmq", CN=cn), key, self._ca.subject, self._ca_key, server=True, client=True)
        return self._write(f"{name}.pem", _pem(cert)), self._write(f"{name}.key", _key_pem(key))

    def _client(self, cn, issuer, issuer_key, prefix="client", days=(-1, 30)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(C="US", O="Example", OU="eng", CN=cn), key, issuer.subject, issuer_key, days=days)
        return self._write(f"{prefix}.pem", _pem(cert)), self._write(f"{prefix}.key", _key_pem(key))


def ktls_available():
    """Whether this kernel has TLS as a TCP upper-layer protocol (CONFIG_TLS)."""
    with socket.socket() as lsock, socket.socket() as c:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        c.connect(lsock.getsockname())
        try:
            c.setsockopt(socket.SOL_TCP, 31, b"tls")  # TCP_ULP
            return True
        except OSError:
            return False
