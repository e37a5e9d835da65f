"""The raw store: every ingested image's original bytes, packed into Parquet files under data/raw/packs/, encrypted at
rest (ingest.encrypt_raw, on by default).

A pack holds (record_id, data) rows for one chunk of records; data/raw/records.parquet names each record's pack in
`raw_pack`. The first design asked for one file per image (data/raw/images/<sha256>.<ext>); measured on these machines,
creating a small file costs 100-500 us of kernel time, more than decoding a 256 px JPEG, and DVC hashes and caches
each file separately: a million-image source becomes a million inodes in the workspace and in the DVC cache. Packs
keep the bytes unmodified and content-addressed (record_id is their sha256), in one file per chunk.

A pack's name is derived from the record ids it was written with, so a run from scratch is reproducible. Packs are
written without fsync; the stage syncs them (atelier.io.sync_files) before it commits its tables. `compact` keeps
the store equal to what the records need: packs no record refers to are deleted, and a pack holding bytes of
records that left the sources is rewritten without them (an image removed from a source leaves nothing behind).

Encryption at rest (issue 18, item 3). Originals keep what the clean stage strips (GPS, camera serials, faces
unblurred), so each row's `data` is AES-256-GCM ciphertext (with its 16-byte tag) of the original bytes, and the
pack's schema metadata says so (`atelier.encryption`, `atelier.key_id`). read_pack decrypts and checks that the
bytes still hash to their record id: every stage reads exactly the original bytes, as before.
- The key: 32 random bytes in `raw-store.key`, in a folder outside the repository like the signing key
  (`~/.config/atelier/data`, or $ATELIER_DATA_KEY_DIR), folder 0700, file 0600, created by the first ingest that
  encrypts; never logged, printed or put in a message. Two keys are derived from it with HKDF-SHA256 (one to
  encrypt, one to make nonces); a pack records only the key's id (an HMAC of a fixed label, 16 hex digits), so a
  wrong key is named as such before any decryption is tried.
- Deterministic nonces, so DVC sees the same bytes for the same inputs (a fresh run and an incremental one give the
  same pack and the same dvc.lock md5 on one machine with one key): nonce = HMAC-SHA256(nonce key, record_id)[:12],
  and record_id is the sha256 of the plaintext. A nonce therefore repeats only for the same record id, that is the
  same plaintext (encrypting it again gives the same ciphertext: nothing leaks beyond "these are equal", which
  records.parquet says anyway); two different plaintexts share a nonce only if SHA-256 collides or the 96-bit
  truncated HMAC does (about n^2 / 2^97 for n records: 1e-11 for a billion). This is the SIV construction (the
  nonce a PRF of the message) with AES-GCM. The record id is the associated data: a row moved under another id
  fails authentication.
- A missing or wrong key stops the stage with RawStoreKeyError, whose message says what to do; a pack that fails
  authentication with the right key is damaged (PackDamaged, an OSError: the clean stage rejects its records as
  file_unreadable, naming the pack). `migrate` brings an existing store to the wanted form in place (plaintext packs
  of an earlier run are encrypted, and back when encrypt_raw is off), keeping each pack's name.

The clean stage stores its PNGs with the same functions, in data/clean/packs/, one pack per chunk named by the
chunk's key; those are training copies (EXIF stripped) and are not encrypted.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import stat
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atelier import paths
from atelier.io import read_table, write_bytes

PACK_SCHEMA = pa.schema([("record_id", pa.string()), ("data", pa.binary())])
KEY_DIR_ENV = "ATELIER_DATA_KEY_DIR"
DEFAULT_KEY_DIR = Path("~/.config/atelier/data")
KEY_FILE = "raw-store.key"
SCHEME = b"AES-256-GCM; nonce=HMAC-SHA256(nonce key, record_id)[:12]; aad=record_id"
ENCRYPTION, KEY_ID = b"atelier.encryption", b"atelier.key_id"


class RawStoreKeyError(RuntimeError):
    """The raw store's key is missing, unreadable or not the one its packs were encrypted with (the message says
    what to do; it never holds key material)."""


class PackDamaged(OSError):
    """A pack's row fails authentication with the right key, or its bytes no longer hash to their record id."""


class DataKey:
    """The raw store's key, as the two keys derived from it (the repr shows only the key's id)."""

    def __init__(self, secret: bytes):
        derive = lambda label: HKDF(hashes.SHA256(), 32, salt=None, info=label).derive(secret)  # noqa: E731
        self.id = hmac.new(secret, b"atelier raw store key id", hashlib.sha256).hexdigest()[:16]
        self._aead = AESGCM(derive(b"atelier raw store: encryption"))
        self._nonce_key = derive(b"atelier raw store: nonces")

    def __repr__(self) -> str:
        return f"DataKey(id={self.id})"

    def _nonce(self, record_id: str) -> bytes:
        return hmac.new(self._nonce_key, record_id.encode(), hashlib.sha256).digest()[:12]

    def encrypt(self, record_id: str, data: bytes) -> bytes:
        """The ciphertext (and tag) of one record's bytes: the same for the same record, key and bytes."""
        return self._aead.encrypt(self._nonce(record_id), data, record_id.encode())

    def decrypt(self, record_id: str, sealed: bytes) -> bytes:
        """One record's bytes; PackDamaged when the row fails authentication."""
        try:
            return self._aead.decrypt(self._nonce(record_id), sealed, record_id.encode())
        except InvalidTag:
            raise PackDamaged(
                f"record {record_id}: its encrypted bytes fail authentication (the pack was altered "
                "or damaged); re-ingest it: remove the pack and run the ingest stage"
            ) from None


def key_dir(folder: Path | str | None = None) -> Path:
    """The key folder: `folder`, else $ATELIER_DATA_KEY_DIR, else ~/.config/atelier/data."""
    return Path(folder or os.environ.get(KEY_DIR_ENV) or DEFAULT_KEY_DIR).expanduser().resolve()


def data_key(folder: Path | str | None = None, create: bool = False) -> DataKey:
    """The raw store's key from the key folder; with `create`, made on first use (folder 0700, file 0600)."""
    return _load_key(str(key_dir(folder)), create)


@lru_cache(maxsize=4)
def _load_key(folder: str, create: bool) -> DataKey:
    where = Path(folder)
    path = where / KEY_FILE
    if where.is_relative_to(paths.ROOT):
        raise RawStoreKeyError(
            f"{where}: the raw store's key must live outside the repository ({paths.ROOT}); set "
            f"{KEY_DIR_ENV} to a private folder elsewhere"
        )
    if not path.exists():
        if not create:
            raise RawStoreKeyError(
                f"the raw store is encrypted and its key is not here: {path} does not exist. Set {KEY_DIR_ENV} to "
                "the folder that holds raw-store.key (or restore the file there); if the key is lost, re-ingest from "
                "the sources: remove data/raw and .atelier/ingest-index.parquet, then run `atelier run`"
            )
        _create_key(where, path)
    for p in (where, path):
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            fix = "700" if p == where else "600"
            raise RawStoreKeyError(f"{p}: mode {mode:04o} lets others read it; run `chmod {fix} {p}`")
    secret = path.read_bytes()
    if len(secret) != 32:
        raise RawStoreKeyError(
            f"{path}: not a raw store key (32 bytes expected); restore the right file, or move it "
            "aside and re-ingest from the sources"
        )
    return DataKey(secret)


def _create_key(where: Path, path: Path) -> None:
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    tmp = where / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another first run made at the same moment
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _write(path: Path, rows: dict[str, bytes], key_id: str | None = None) -> None:
    """Write rows as stored (ciphertext when `key_id` is given: the pack says it is encrypted, and with which key)."""
    buf = io.BytesIO()
    schema = PACK_SCHEMA if key_id is None else PACK_SCHEMA.with_metadata({ENCRYPTION: SCHEME, KEY_ID: key_id.encode()})
    table = pa.table({"record_id": list(rows), "data": list(rows.values())}, schema=schema)
    pq.write_table(table, buf, compression="none")  # images are compressed already (and ciphertext does not shrink)
    write_bytes(path, buf.getvalue(), durable=False)  # atomic; the stage syncs (sync_files) before its commit


def write_pack(
    folder: Path, rows: list[tuple[str, bytes]], name: str | None = None, key: DataKey | None = None
) -> Path:
    """Store (record_id, bytes) rows in one pack (an id given twice is stored once), encrypted with `key` when given;
    return the pack's path. The pack is named `name`, or after its ids: a name must always stand for the same rows."""
    unique: dict[str, bytes] = {}
    for rid, data in rows:
        unique.setdefault(rid, data)  # all occurrences of an id have the same bytes
    path = folder / (name or f"{hashlib.sha256(chr(10).join(unique).encode()).hexdigest()[:32]}.parquet")
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # the same ids hold the same bytes: an existing pack of that name is this pack
        if key is not None:
            unique = {rid: key.encrypt(rid, data) for rid, data in unique.items()}
        _write(path, unique, None if key is None else key.id)
    return path


def pack_key_id(path: Path) -> str | None:
    """The id of the key a pack is encrypted with, or None for a plaintext pack."""
    meta = pq.read_schema(path).metadata or {}
    return meta[KEY_ID].decode() if ENCRYPTION in meta else None


def _stored(path: Path, ids: set[str] | None = None) -> tuple[dict[str, bytes], str | None]:
    """A pack's rows as stored (ciphertext for an encrypted pack) and its key id."""
    table = read_table(path)
    meta = table.schema.metadata or {}
    key_id = meta[KEY_ID].decode() if ENCRYPTION in meta else None
    rows = table["record_id"].to_pylist()
    if ids is None:
        return dict(zip(rows, table["data"].to_pylist())), key_id
    return {rid: table["data"][i].as_py() for i, rid in enumerate(rows) if rid in ids}, key_id


def _key_for(path: Path, key_id: str) -> DataKey:
    key = data_key()
    if key.id != key_id:
        raise RawStoreKeyError(
            f"{paths.relative(path)} is encrypted with another key (id {key_id}) than the one in "
            f"{key_dir()} (id {key.id}). Set {KEY_DIR_ENV} to the folder with the key it was "
            "written with; if that key is lost, re-ingest from the sources: remove data/raw and "
            ".atelier/ingest-index.parquet, then run `atelier run`"
        )
    return key


def read_pack(path: Path, ids: set[str] | None = None) -> dict[str, bytes]:
    """record_id -> bytes of a pack's rows (only `ids`, when given); an encrypted pack is decrypted and each record's
    bytes checked against its id (their sha256)."""
    rows, key_id = _stored(path, ids)
    if key_id is None:
        return rows
    key = _key_for(path, key_id)
    out = {}
    for rid, sealed in rows.items():
        data = key.decrypt(rid, sealed)
        if hashlib.sha256(data).hexdigest() != rid:
            raise PackDamaged(
                f"{paths.relative(path)}: record {rid} decrypts to bytes with another sha256; "
                "re-ingest it: remove the pack and run the ingest stage"
            )
        out[rid] = data
    return out


def read_bytes(record: dict) -> bytes:
    """One record's original bytes (records.parquet row with `raw_pack`)."""
    data = read_pack(paths.absolute(record["raw_pack"]), {record["record_id"]}).get(record["record_id"])
    if data is None:
        raise FileNotFoundError(f"record {record['record_id']} is not in its pack {record['raw_pack']}")
    return data


def encrypted_packs(folder: Path) -> int:
    """How many packs in `folder` are encrypted (their metadata only is read)."""
    if not folder.exists():
        return 0
    return sum(pack_key_id(p) is not None for p in folder.glob("*.parquet"))


def encrypted_count(records: Path | None = None) -> tuple[int, int]:
    """(records whose original bytes are encrypted at rest, records with bytes in the raw store), from
    data/raw/records.parquet and each pack's metadata (no key needed): for the dataset card and the audit."""
    records = records or paths.RAW_RECORDS
    if not records.exists():
        return 0, 0
    packs = [p for p in read_table(records, columns=["raw_pack"])["raw_pack"].to_pylist() if p is not None]
    encrypted = {p: paths.absolute(p).exists() and pack_key_id(paths.absolute(p)) is not None for p in set(packs)}
    return sum(encrypted[p] for p in packs), len(packs)


def _packs(folder: Path) -> list[Path]:
    """The packs in `folder` in name order (hidden files, such as a write in progress, left out); none when absent."""
    if not folder.exists():
        return []
    return [
        Path(e.path)
        for e in sorted(os.scandir(folder), key=lambda e: e.name)
        if not e.name.startswith(".") and e.name.endswith(".parquet")
    ]


def migrate(folder: Path, key: DataKey | None) -> int:
    """Bring every pack in `folder` to the wanted form in place, keeping its name: encrypted with `key`, or plaintext
    when `key` is None (packs of another key raise RawStoreKeyError); return how many packs were rewritten."""
    rewritten = 0
    for path in _packs(folder):
        have = pack_key_id(path)
        if have == (None if key is None else key.id):
            continue
        plain = read_pack(path)  # raises RawStoreKeyError for a pack of another key
        _write(
            path,
            plain if key is None else {rid: key.encrypt(rid, d) for rid, d in plain.items()},
            None if key is None else key.id,
        )
        rewritten += 1
    return rewritten


def remove_records(folder: Path, ids: set[str]) -> int:
    """Rewrite every pack in `folder` that holds any of `ids` without them (a pack left empty is deleted), as stored
    (ciphertext stays ciphertext); return how many packs changed. Used by an erasure."""
    changed = 0
    for path in _packs(folder):
        held = set(read_table(path, columns=["record_id"])["record_id"].to_pylist())
        if not held & ids:
            continue
        rows, key_id = _stored(path, held - ids)
        if rows:
            _write(path, rows, key_id)
        else:
            path.unlink()
        changed += 1
    return changed


def compact(folder: Path, live: dict[str, set[str]], held: dict[str, set[str]] | None = None) -> tuple[int, int]:
    """Make `folder` hold exactly the `live` {pack path (as stored) -> record ids}; return (deleted, rewritten).

    `held` {pack name -> ids}: what each pack is known to hold (the last finished compaction); a pack that holds
    nothing but live ids is not opened. Packs not in `held` are read. A rewritten pack stays as it was stored."""
    deleted = rewritten = 0
    if not folder.exists():
        return 0, 0
    wanted = {Path(paths.absolute(p)).name: ids for p, ids in live.items()}
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        ids = wanted.get(entry.name)
        if ids is None:
            os.unlink(entry.path)
            deleted += 1
            continue
        known = held.get(entry.name) if held is not None else None
        if known is not None and known <= ids:
            continue
        stored = read_table(Path(entry.path), columns=["record_id"])["record_id"].to_pylist()
        if set(stored) - ids:
            _write(Path(entry.path), *_stored(Path(entry.path), ids))
            rewritten += 1
    return deleted, rewritten
