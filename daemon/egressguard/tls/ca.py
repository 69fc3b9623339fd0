"""The host CA that intercepted TLS flows are re-signed with, and the leaf certificates it mints.

On first run the daemon creates `<state_dir>/ca.key` (EC P-256, 0600) and `<state_dir>/ca.crt`.
Agents that should be inspected trust `ca.crt` (`egressguard ca export`). For every SNI the
proxy opens, a leaf certificate for exactly that name is minted, signed by the CA, and its
server-side `ssl.SSLContext` cached (bounded LRU), so the second flow to a host pays nothing.

Everything is `cryptography`'s X.509 builder: no ASN.1 by hand. Python's `ssl` can only load a
certificate chain from files, so each leaf's PEM goes into `<state_dir>/leaves/` (0700 folder,
0600 files) where only root can read the leaf keys.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import stat
import tempfile
import threading
from collections import OrderedDict

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from egressguard.errors import EnvironmentProblem

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
LEAF_DIR = "leaves"
CA_DAYS = 3650
LEAF_DAYS = 30
LEAF_CACHE = 1024
ALPN = ["http/1.1"]          # intercepted flows are parsed as HTTP/1.1: never offer h2


class HostCA:
    """Load or create the CA under `state_dir`; mint and cache leaf TLS contexts."""

    def __init__(self, state_dir: str, common_name: str = "egressguard host CA"):
        self.state_dir = state_dir
        self.key_path = os.path.join(state_dir, CA_KEY)
        self.cert_path = os.path.join(state_dir, CA_CERT)
        self.leaf_dir = os.path.join(state_dir, LEAF_DIR)
        _private_dir(state_dir)
        if not os.path.exists(self.key_path):
            self._create(common_name)
        self.key = _load_key(self.key_path)
        with open(self.cert_path, "rb") as fh:
            self.cert_pem = fh.read()
        self.cert = x509.load_pem_x509_certificate(self.cert_pem)
        if self.cert.public_key().public_numbers() != self.key.public_key().public_numbers():
            raise EnvironmentProblem(f"{self.cert_path} does not belong to {self.key_path}: "
                                     "delete both to make a new CA (and re-trust it)")
        _private_dir(self.leaf_dir)
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()

    def _create(self, cn: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "egressguard")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(self.key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
        _write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    # ------------------------------------------------------------------ leaves
    def leaf_pem(self, host: str) -> tuple[bytes, bytes]:
        """(certificate chain PEM, key PEM) for `host`, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        return chain, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for `host` (minted once, then cached)."""
        host = host.lower()
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is not None:
                self._contexts.move_to_end(host)
                return ctx
        chain, key = self.leaf_pem(host)
        name = hashlib.sha256(host.encode()).hexdigest()[:32]
        path = os.path.join(self.leaf_dir, name + ".pem")
        _write_private(path, key + chain, 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(path)
        ctx.set_alpn_protocols(ALPN)
        with self._lock:
            self._contexts[host] = ctx
            while len(self._contexts) > LEAF_CACHE:
                self._contexts.popitem(last=False)
        return ctx


def upstream_context(extra_ca_file: str | None = None) -> ssl.SSLContext:
    """Client-side context for the real destination: the system trust store (plus an optional
    bundle), hostname checked, HTTP/1.1 only. Never a silent downgrade on failure."""
    ctx = ssl.create_default_context()
    if extra_ca_file:
        ctx.load_verify_locations(cafile=extra_ca_file)
    ctx.set_alpn_protocols(ALPN)
    return ctx


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _write_private(path: str, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=os.path.dirname(path))   # 0600
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _load_key(path: str) -> ec.EllipticCurvePrivateKey:
    st = os.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise EnvironmentProblem(f"CA key {path} is not a regular file")
    if st.st_mode & 0o077:
        raise EnvironmentProblem(
            f"CA key {path} is accessible to group/others (mode {stat.S_IMODE(st.st_mode):04o}):"
            f" anyone who read it can impersonate any site to the agents. Fix: delete {path} "
            f"and ca.crt to make a new CA, then re-trust it")
    with open(path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnvironmentProblem(f"CA key {path} is not an EC key")
    return key
