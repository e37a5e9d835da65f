"""The raw store encrypted at rest (issue 18, item 3): packs hold no readable original bytes, every reader gets the
exact bytes back (checked against their sha256), the same inputs give the same pack bytes (stable DVC md5s), a
missing or wrong key is a clear error that holds no key material, and an earlier plaintext store is migrated."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest
from PIL import Image

from atelier import paths, rawstore
from atelier.config import FolderSourceParams, IngestParams
from atelier.rawstore import (
    PackDamaged,
    RawStoreKeyError,
    compact,
    data_key,
    migrate,
    read_pack,
    remove_records,
    write_pack,
)

GPS = b"GPSLatitude 48.8566N serial CAM-0042"  # what an original keeps and the training copy drops


def original(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (seed % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue() + GPS + bytes([seed])  # trailing bytes: still a readable PNG


def rows(n: int = 3) -> list[tuple[str, bytes]]:
    return [(hashlib.sha256(d).hexdigest(), d) for d in map(original, range(n))]


@pytest.fixture
def keydir(tmp_path, monkeypatch):
    folder = tmp_path / "keys"
    monkeypatch.setenv(rawstore.KEY_DIR_ENV, str(folder))
    return folder


def test_an_encrypted_pack_holds_no_readable_bytes_and_reads_back_exactly(keydir, tmp_path):
    key = data_key(create=True)
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    assert stat.S_IMODE((keydir / rawstore.KEY_FILE).stat().st_mode) == 0o600
    assert repr(key) == f"DataKey(id={key.id})"  # a log line or traceback shows the id only
    pack = write_pack(tmp_path / "packs", rows(), key=key)
    stored = pack.read_bytes()
    assert GPS not in stored and b"IHDR" not in stored
    assert read_pack(pack) == dict(rows())
    assert rawstore.pack_key_id(pack) == key.id
    # deterministic: the same rows and key give the same bytes (dvc.lock stays put); another folder, same pack
    again = write_pack(tmp_path / "other", rows(), key=key)
    assert again.name == pack.name and again.read_bytes() == stored
    plain = write_pack(tmp_path / "plain", rows())
    assert GPS in plain.read_bytes() and read_pack(plain) == dict(rows())


def test_missing_or_wrong_key_is_a_clear_error_without_key_material(keydir, tmp_path, monkeypatch):
    key = data_key(create=True)
    secret = (keydir / rawstore.KEY_FILE).read_bytes()
    pack = write_pack(tmp_path / "packs", rows(), key=key)
    monkeypatch.setenv(rawstore.KEY_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RawStoreKeyError, match="ATELIER_DATA_KEY_DIR") as missing:
        read_pack(pack)
    assert not (tmp_path / "nowhere").exists()  # a reader never creates a key
    other = data_key(tmp_path / "other", create=True)
    monkeypatch.setenv(rawstore.KEY_DIR_ENV, str(tmp_path / "other"))
    with pytest.raises(RawStoreKeyError, match=f"another key \\(id {key.id}\\).*id {other.id}") as wrong:
        read_pack(pack)
    for exc in (missing.value, wrong.value):
        assert secret.hex() not in str(exc) and secret not in str(exc).encode(errors="ignore")
    with pytest.raises(RawStoreKeyError, match="outside the repository"):
        data_key(paths.ROOT / ".atelier" / "keys", create=True)


def test_a_tampered_row_is_a_damaged_pack(keydir, tmp_path):
    key = data_key(create=True)
    ((rid, data),) = rows(1)
    pack = write_pack(tmp_path / "packs", [(rid, data)], key=key)
    sealed = rawstore._stored(pack)[0][rid]
    rawstore._write(pack, {rid: sealed[:-1] + bytes([sealed[-1] ^ 1])}, key.id)
    with pytest.raises(PackDamaged, match="fail authentication"):
        read_pack(pack)
    assert issubclass(PackDamaged, OSError)  # the clean stage rejects its records as file_unreadable


def test_migrate_compact_and_erase_keep_the_form(keydir, tmp_path):
    key = data_key(create=True)
    folder = tmp_path / "packs"
    plain = write_pack(folder, rows())
    assert migrate(folder, key) == 1 and migrate(folder, key) == 0
    fresh = write_pack(tmp_path / "fresh", rows(), key=key)
    assert plain.read_bytes() == fresh.read_bytes()  # migrated in place = written encrypted from scratch
    ids = [rid for rid, _ in rows()]
    assert compact(folder, {str(plain): set(ids[:2])}) == (0, 1)
    assert rawstore.pack_key_id(plain) == key.id and set(read_pack(plain)) == set(ids[:2])
    assert remove_records(folder, {ids[0]}) == 1
    assert read_pack(plain) == {ids[1]: dict(rows())[ids[1]]} and GPS not in plain.read_bytes()
    assert migrate(folder, None) == 1 and GPS in plain.read_bytes()  # encrypt_raw off: back to plaintext


def test_ingest_with_encryption_gives_the_same_records_and_bytes(keydir, tmp_path):
    from atelier.config import EngineParams
    from atelier.io import ParquetStream, read_table
    from atelier.parallel import Engine
    from stages.ingest import INDEX_SCHEMA, RAW_SCHEMA, Previous, ingest_all

    src = tmp_path / "src"
    src.mkdir()
    lines = []
    for i, (_, data) in enumerate(rows(4)):
        (src / f"{i}.png").write_bytes(data)
        lines.append(f'{{"file_name": "{i}.png", "title": "t{i}", "license": "CC0-1.0"}}')
    (src / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    p = IngestParams(sources=[FolderSourceParams(name="s", kind="folder", path=str(src))])
    data_key(create=True)  # as the stage's main() does: the workers only read it
    tables = {}
    for mode in ("plain", "encrypted"):
        out_dir = tmp_path / mode
        with (
            Engine(EngineParams(workers=1)) as engine,
            ParquetStream(out_dir / "records.parquet", RAW_SCHEMA) as out,
            ParquetStream(out_dir / "index.parquet", INDEX_SCHEMA) as index,
        ):
            ingest_all(
                p,
                engine,
                out_dir / "packs",
                out,
                index,
                Previous(),
                key_dir=str(keydir) if mode == "encrypted" else None,
            )
        table = read_table(out_dir / "records.parquet")
        tables[mode] = table.drop_columns(["raw_pack"])
        packs = {r for r in table["raw_pack"].to_pylist() if r}
        got = {}
        for pack in packs:
            got |= read_pack(paths.absolute(pack))
        assert got == {rid: d for rid, d in rows(4)}
    assert tables["plain"].equals(tables["encrypted"])  # the records do not depend on the encryption
    assert rawstore.encrypted_count(tmp_path / "encrypted" / "records.parquet") == (4, 4)
    assert rawstore.encrypted_count(tmp_path / "plain" / "records.parquet") == (0, 4)


def test_the_stages_migrate_a_plaintext_store_and_refuse_a_lost_key(keydir, tmp_path):
    """An earlier run's plaintext raw store is encrypted in place by the next ingest (same pack names, same records,
    clean reads it unchanged); a lost key stops ingest with what to do, not a traceback."""
    import subprocess
    import sys

    from tests.conftest import copy_repo, edit_params
    from tests.test_scale_out import snapshot, stage

    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 1}, ingest={"encrypt_raw": False})
    stage(root, "demo")
    stage(root, "ingest")
    stage(root, "clean")
    plain = snapshot(root)
    packs = sorted(p.name for p in (root / "data/raw/packs").iterdir())
    assert all(rawstore.pack_key_id(root / "data/raw/packs" / p) is None for p in packs)
    edit_params(root, ingest={"encrypt_raw": True})
    assert "raw packs encrypted in place" in stage(root, "ingest")
    assert sorted(p.name for p in (root / "data/raw/packs").iterdir()) == packs
    assert all(rawstore.pack_key_id(root / "data/raw/packs" / p) == data_key().id for p in packs)
    stage(root, "clean")
    assert snapshot(root) == plain  # the pipeline's outputs do not change with the encryption
    lost = subprocess.run(
        [sys.executable, "-m", "stages.ingest"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {rawstore.KEY_DIR_ENV: str(tmp_path / "lost")},
    )
    assert lost.returncode == 2 and "Traceback" not in lost.stderr and rawstore.KEY_DIR_ENV in lost.stderr
    assert not (tmp_path / "lost").exists()  # no new key made for a store encrypted with another
