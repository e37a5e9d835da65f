"""The local signing identity for content credentials: a CA and a leaf certificate (ES256, P-256) created on first use
in a folder outside the repository (`~/.config/atelier/signing`, or $ATELIER_SIGNING_DIR), files 0600, folder 0700.

C2PA readers reject a self-signed signer, so the CA issues a leaf with an Authority Key Identifier and the extended key
usages C2PA claim signing (1.3.6.1.4.1.62558.2.1) and emailProtection; the chain file holds the leaf, then the CA.
A reader shows `Trusted` only when given `ca.pem` as a trust anchor. The CA key is kept so that an expiring leaf can
be reissued under the same anchor. Key material is never logged, printed or put in an exception message.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from atelier import paths

SIGNING_DIR_ENV = "ATELIER_SIGNING_DIR"
DEFAULT_SIGNING_DIR = Path("~/.config/atelier/signing")
C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
CA_DAYS = 3650
LEAF_DAYS = 730
RENEW_BEFORE_DAYS = 30

FILES = {"key": "signer.key", "chain": "chain.pem", "ca_cert": "ca.pem", "ca_key": "ca.key"}


@dataclass(frozen=True)
class SigningIdentity:
    """Paths of one signing identity's files (never their contents, so a repr or log line leaks nothing)."""

    folder: Path
    key: Path
    chain: Path
    ca_cert: Path

    def ca_pem(self) -> str:
        """The CA certificate (public): the trust anchor readers need to report `Trusted`."""
        return self.ca_cert.read_text(encoding="ascii")


def signing_dir(folder: Path | str | None = None) -> Path:
    """The identity folder: `folder`, else $ATELIER_SIGNING_DIR, else ~/.config/atelier/signing."""
    chosen = folder or os.environ.get(SIGNING_DIR_ENV) or DEFAULT_SIGNING_DIR
    return Path(chosen).expanduser().resolve()


def ensure_signing_identity(folder: Path | str | None = None) -> SigningIdentity:
    """Load the identity in the signing folder, creating it on first use and reissuing the leaf before it expires."""
    folder = signing_dir(folder)
    _refuse_inside_repository(folder)
    _make_private_dir(folder)
    with open(folder / ".lock", "a") as lock:  # two first runs at once must not make two CAs
        os.chmod(lock.fileno(), 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        identity = _identity(folder)
        present = [p.exists() for p in (identity.key, identity.chain, identity.ca_cert, folder / FILES["ca_key"])]
        if not any(present):
            _create(folder, subject="Atelier local content credentials")
        elif not all(present):
            raise FileNotFoundError(
                f"{folder}: the signing identity is incomplete (expected "
                f"{sorted(FILES.values())}); move the folder aside to create a new identity, "
                "or restore the missing files"
            )
        _check_private(folder)
        if _leaf_needs_reissue(identity):
            _issue_leaf(folder)
    return identity


def trust_anchor(folder: Path | str | None = None) -> str:
    """The CA certificate of the existing identity in the signing folder, for verifying; nothing is ever created.

    Raises FileNotFoundError (no identity there: a verifier without the operator's folder uses a published bundle's
    anchor instead) or PermissionError (a folder others can list)."""
    folder = signing_dir(folder)
    ca = folder / FILES["ca_cert"]
    if not ca.is_file():
        raise FileNotFoundError(
            f"no trust anchor: {ca} does not exist, and an audit never creates keys; audit with a "
            f"published bundle (`atelier audit --bundle DIR`), or set {SIGNING_DIR_ENV} to the "
            "operator's signing folder"
        )
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{folder}: mode {mode:04o} lets others list it; use a private folder (`chmod 700`)")
    return ca.read_text(encoding="ascii")


def create_signing_identity(folder: Path | str, subject: str) -> SigningIdentity:
    """Create a new, unrelated identity (its own CA) in an empty `folder`: for tests that need a second signer."""
    folder = signing_dir(folder)
    _make_private_dir(folder)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder}: not empty; a new identity needs an empty folder")
    _create(folder, subject=subject)
    return _identity(folder)


def _identity(folder: Path) -> SigningIdentity:
    return SigningIdentity(
        folder=folder, key=folder / FILES["key"], chain=folder / FILES["chain"], ca_cert=folder / FILES["ca_cert"]
    )


def _refuse_inside_repository(folder: Path) -> None:
    if folder.is_relative_to(paths.ROOT):
        raise ValueError(
            f"{folder}: signing keys must live outside the repository ({paths.ROOT}); set "
            f"{SIGNING_DIR_ENV} to a private folder elsewhere"
        )


def _make_private_dir(folder: Path) -> None:
    """Create `folder` 0700, or check that an existing one is private (it is never chmod-ed behind your back)."""
    if not folder.exists():
        try:
            folder.mkdir(mode=0o700, parents=True)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # another first run made it at the same moment: check it like any existing folder
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{folder}: mode {mode:04o} lets others list it; use a private folder (`chmod 700`)")


def _check_private(folder: Path) -> None:
    for name in FILES.values():
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{folder / name}: mode {mode:04o} lets others read it; run `chmod 600` on it")


def _write_private(path: Path, data: bytes) -> None:
    """Write a file that is 0600 from its first byte (created under a temporary name, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Atelier"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _create(folder: Path, subject: str) -> None:
    """A new CA (self-signed, path length 0) and a leaf issued by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{subject} CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(folder / FILES["ca_key"], _pem_key(ca_key))
    _write_private(folder / FILES["ca_cert"], _pem_cert(ca_cert))
    _issue_leaf(folder)


def _issue_leaf(folder: Path) -> None:
    """Issue a new leaf key and certificate from the folder's CA; write the chain (leaf first, then the CA)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = serialization.load_pem_private_key((folder / FILES["ca_key"]).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((folder / FILES["ca_cert"]).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cn = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.removesuffix(" CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{cn} signer"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([C2PA_CLAIM_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # A crash between these two writes leaves a key that does not match the chain; the next call reissues.
    _write_private(folder / FILES["key"], _pem_key(key))
    _write_private(folder / FILES["chain"], _pem_cert(cert) + _pem_cert(ca_cert))


def _leaf_needs_reissue(identity: SigningIdentity) -> bool:
    """True when the leaf expires within RENEW_BEFORE_DAYS or does not match the key file."""
    leaf = x509.load_pem_x509_certificates(identity.chain.read_bytes())[0]
    if leaf.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return True
    key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
    der = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(serialization.Encoding.DER, der) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, der
    )
