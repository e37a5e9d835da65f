"""Signed JSON documents that anyone can check with the operator's CA certificate and nothing else: the model
credentials, and the head of the ledger's log.

A signed document is `{"payload": {...}, "signature": {"alg": "ES256", "value": <base64 DER ECDSA signature>,
"certificate_chain": <PEM, leaf first, then the CA>}}`. The signature covers the payload's canonical JSON (keys
sorted, no spaces, UTF-8). Verifying needs only the trust anchor (`ca.pem`): the leaf must be issued by it, valid at the
payload's `issued_at`, and its key must verify the signature. The signing key never leaves the signing folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provenance.keys import SigningIdentity

ALG = "ES256"


def canonical(obj: object) -> bytes:
    """The bytes a signature or digest covers: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(obj: object) -> str:
    """sha256 of the canonical JSON of `obj` (hex)."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def sign(payload: dict, identity: SigningIdentity) -> dict:
    """`payload` signed with the identity's leaf key, carrying the public certificate chain."""
    value, chain = sign_bytes(canonical(payload), identity)
    return {"payload": payload, "signature": {"alg": ALG, "value": value, "certificate_chain": chain}}


def verify(document: dict, anchor_pem: str) -> list[str]:
    """Problems with a signed document (empty when its signature verifies under `anchor_pem`)."""
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("payload"), dict)
        or not isinstance(document.get("signature"), dict)
    ):
        return ["not a signed document: expected {payload, signature}"]
    sig = document["signature"]
    if sig.get("alg") != ALG:
        return [f"signature algorithm {sig.get('alg')!r} is not {ALG}"]
    return verify_bytes(
        canonical(document["payload"]),
        sig.get("value"),
        sig.get("certificate_chain"),
        anchor_pem,
        _time(document["payload"].get("issued_at")),
    )


def sign_bytes(data: bytes, identity: SigningIdentity) -> tuple[str, str]:
    """(base64 DER ECDSA P-256/SHA-256 signature of `data` by the identity's leaf key, the PEM chain: leaf, CA)."""
    key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{identity.key}: not an EC key; Atelier signs with ECDSA P-256 (provenance.keys makes one)")
    value = base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode("ascii")
    chain = identity.chain.read_text(encoding="ascii")
    if verify_bytes(data, value, chain, None, None):
        raise ValueError(
            f"{identity.key} does not match the leaf certificate in {identity.chain}; "
            "provenance.keys.ensure_signing_identity() reissues the leaf"
        )
    return value, chain


def verify_bytes(
    data: bytes, value: object, chain_pem: object, anchor_pem: str | None, at: dt.datetime | None
) -> list[str]:
    """Problems with a signature `value` (base64) over `data` by the leaf of `chain_pem`: the signature must verify,
    and, given `anchor_pem`, the leaf must be issued by that CA (and valid at `at`, when given)."""
    try:
        leaf = x509.load_pem_x509_certificates(str(chain_pem).encode("ascii"))[0]
        signature = base64.b64decode(str(value), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        return [f"the signature or its certificate chain cannot be read ({exc})"]
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return ["the signing certificate does not hold an EC key: not signed by an Atelier identity"]
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return [
            "the signature does not verify: the signed content was changed after signing, or signed with another key"
        ]
    if anchor_pem is None:
        return []
    anchor = x509.load_pem_x509_certificate(anchor_pem.encode("ascii"))
    try:
        leaf.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature):
        return [
            f"signed by '{_common_name(leaf)}', a certificate not issued by the trust anchor "
            f"'{_common_name(anchor)}': another identity signed it"
        ]
    if at is not None and not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        return [
            f"signed at {at.isoformat()}, outside its certificate's validity "
            f"({leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()})"
        ]
    return []


def anchor_description(anchor_pem: str) -> str:
    """A trust anchor as a person can check it: its name and sha256 fingerprint."""
    cert = x509.load_pem_x509_certificate(anchor_pem.encode("ascii"))
    return f"CN={_common_name(cert)}, sha256 fingerprint {cert.fingerprint(hashes.SHA256()).hex()}"


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _time(value: object) -> dt.datetime | None:
    try:
        at = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
