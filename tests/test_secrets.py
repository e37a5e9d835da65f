"""Signing keys stay secret: private files and folder, never inside the repository, and no output of a signing run
(signed PNG, sidecar, ledger, logs) holds any form of the private keys.

`assert_no_key_material(root, identity)` is the reusable check: an end-to-end test can call it on a whole pipeline
workspace (mlruns/, mlartifacts/, mlflow.db, dvc.lock, reports/, artworks/, ledger/, logs).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from atelier import paths
from atelier.io import write_json, write_text
from provenance import ledger
from provenance.keys import FILES, SigningIdentity, ensure_signing_identity
from provenance.png import png_with_manifest
from provenance.signing import artwork_terms, read_credentials, write_signed
from tests.test_provenance_signing import artwork, manifest_for

PEM_MARKER = b"PRIVATE" + b" KEY-----"  # built in two parts so this file does not itself look like a key
CHUNK = 8 << 20


def _b64_cores(data: bytes) -> list[bytes]:
    """The stretch of base64 (standard and URL-safe) that `data` yields at any of the three byte alignments."""
    cores = []
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            cores.append(encode(b"\0" * pad + data)[4:-4])
    return cores


def key_needles(identity: SigningIdentity) -> dict[str, bytes]:
    """Every form in which the identity's private keys could leak: PEM, its lines, DER, base64 of DER at any
    alignment, the raw private scalar in bytes, hex, decimal and base64."""
    needles: dict[str, bytes] = {}
    for name in ("key", "ca_key"):
        pem = (identity.folder / FILES[name]).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        needles[f"{name}: PEM"] = pem.strip()
        needles[f"{name}: DER"] = der
        offset = der.find(scalar)
        body = [line for line in pem.splitlines() if not line.startswith(b"-----")]
        for i, line in enumerate(body):  # the PEM lines that carry private bytes (not only the public key)
            if 48 * i < offset + 32 and offset < 48 * (i + 1):
                needles[f"{name}: PEM line {i + 1}"] = line
        for i, core in enumerate(_b64_cores(der)):
            needles[f"{name}: base64 of DER #{i}"] = core
        for i, core in enumerate(_b64_cores(scalar)):
            needles[f"{name}: base64 of scalar #{i}"] = core
        needles[f"{name}: scalar"] = scalar
        needles[f"{name}: scalar hex"] = scalar.hex().encode()
        needles[f"{name}: scalar HEX"] = scalar.hex().upper().encode()
        needles[f"{name}: scalar decimal"] = str(int.from_bytes(scalar, "big")).encode()
        needles[f"{name}: DER hex"] = der.hex().encode()
    return needles


def _files(root: Path):
    for dirpath, _dirnames, filenames in os.walk(root):  # symlinks are not followed: a link out is not our output
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def find_key_material(root: Path, identity: SigningIdentity) -> list[str]:
    """'file: what' for each file under `root` that holds key material of `identity`, or any PEM private key."""
    needles = {**key_needles(identity), "any PEM private key": PEM_MARKER}
    overlap = max(len(n) for n in needles.values()) - 1
    found = []
    for path in _files(root):
        if identity.folder.resolve() in path.resolve().parents:
            continue  # the identity's own folder is where the keys belong
        with path.open("rb") as fh:
            tail = b""
            while block := fh.read(CHUNK):
                window = tail + block
                found += [f"{path.relative_to(root)}: {what}" for what, n in needles.items() if n in window]
                tail = window[-overlap:]
    return sorted(set(found))


def assert_no_key_material(root: Path, identity: SigningIdentity) -> None:
    """Fail, naming the file and the form, if any file under `root` holds the identity's private keys."""
    found = find_key_material(Path(root), identity)
    assert not found, "private key material found:\n" + "\n".join(found)


@pytest.fixture
def identity(tmp_path, monkeypatch) -> SigningIdentity:
    monkeypatch.setenv("ATELIER_SIGNING_DIR", str(tmp_path / "home" / ".config" / "atelier" / "signing"))
    return ensure_signing_identity()


def test_identity_files_are_private(identity):
    assert stat.S_IMODE(identity.folder.stat().st_mode) == 0o700
    for name in FILES.values():
        assert stat.S_IMODE((identity.folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((identity.folder / ".lock").stat().st_mode) == 0o600
    assert not [p.name for p in identity.folder.iterdir() if p.name.endswith(".tmp")]  # no half-written key left
    assert "BEGIN" not in repr(identity) and "PRIVATE" not in str(identity)


def test_signing_outputs_hold_no_key_material(identity, tmp_path, capsys):
    out = tmp_path / "run"
    image = artwork()
    manifest = manifest_for(image)
    png = out / "artworks" / f"{manifest['id']}.png"
    write_signed(png, png_with_manifest(image, manifest), manifest, identity, artwork_terms(manifest))
    write_json(out / "artworks" / f"{manifest['id']}.provenance.json", manifest)
    conn = ledger.open_ledger(out / "ledger" / "ledger.sqlite")
    ledger.record(conn, manifest, ledger.watermark_id_for(conn, manifest["artwork"]["sha256_pixels"]))
    conn.close()
    print(f"signed {png} with {identity!r}")  # what a log line about signing may say
    write_text(out / "logs" / "run.log", capsys.readouterr().out)
    assert read_credentials(png, identity.ca_pem())["state"] == "Trusted"
    assert len(list(_files(out))) >= 4
    assert_no_key_material(out, identity)


def test_the_check_finds_every_form_of_a_leak(identity, tmp_path):
    """The scanner is not vacuous: each way a key could be written out is caught."""
    pem = identity.key.read_bytes()
    der = base64.b64decode(b"".join(line for line in pem.splitlines() if not line.startswith(b"-----")))
    scalar = serialization.load_pem_private_key(pem, None).private_numbers().private_value
    leaks = {
        "pem.txt": pem,
        "params.json": json.dumps({"key": pem.decode()}).encode(),  # newlines escaped as \n
        "blob.bin": b"\x00" * 5 + der + b"\xff",
        "b64.txt": b"x" + base64.b64encode(b"ab" + der),
        "hex.log": f"key={scalar:064x}".encode(),
        "repr.log": f"EllipticCurvePrivateNumbers(private_value={scalar})".encode(),
    }
    for name, data in leaks.items():
        case = tmp_path / name.replace(".", "_")
        case.mkdir()
        (case / name).write_bytes(data)
        assert find_key_material(case, identity), f"{name}: a leak went unnoticed"
    big = tmp_path / "straddle"
    big.mkdir()
    (big / "weights.bin").write_bytes(b"\x01" * (CHUNK - 10) + der)  # across the scanner's read boundary
    assert find_key_material(big, identity)


def test_keys_are_refused_inside_the_repository(tmp_path, monkeypatch):
    inside = paths.ROOT / "keys-must-not-be-here"
    with pytest.raises(ValueError, match="outside the repository"):
        ensure_signing_identity(inside)
    monkeypatch.setenv("ATELIER_SIGNING_DIR", str(paths.ROOT / "data" / "signing"))
    with pytest.raises(ValueError, match="outside the repository"):
        ensure_signing_identity()
    link = tmp_path / "looks-outside"
    link.symlink_to(paths.ROOT / "tests", target_is_directory=True)
    with pytest.raises(ValueError, match="outside the repository"):
        ensure_signing_identity(link / "signing")  # a link that leads back into the repository
    assert not inside.exists() and not (paths.ROOT / "data" / "signing").exists()
    assert not (paths.ROOT / "tests" / "signing").exists()


def test_no_private_key_is_tracked_in_the_repository():
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=paths.ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    leaked = [
        f
        for f in filter(None, files)
        if (paths.ROOT / f).is_file()
        and (f.endswith((".key", ".p12", ".pfx")) or PEM_MARKER in (paths.ROOT / f).read_bytes())
    ]
    assert not leaked, f"private keys tracked by git: {leaked}"


def test_first_runs_at_once_share_one_identity(tmp_path):
    """Two pipelines starting at once with no signing folder yet (seen with two workspaces sharing
    ATELIER_SIGNING_DIR): both get the one identity; neither fails on the folder the other just made."""
    import subprocess
    import sys

    folder = tmp_path / "keys" / "signing"
    code = (
        "import sys; from provenance.keys import ensure_signing_identity; "
        "print(ensure_signing_identity(sys.argv[1]).ca_cert.read_text())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [err[-500:] for _, err, _ in results]
    assert len({out for out, _, _ in results}) == 1  # one CA, whoever created it
