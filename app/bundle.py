"""`atelier publish DIR`: the public verification bundle, everything an outsider needs to check an artwork without the
operator's keys, databases or workspace; and reading it back for `atelier audit --bundle DIR`.

Layout (every path relative, every file listed with its sha256 in index.json):

    trust/ca.pem                                the trust anchor: the CA certificate only, never a key
    models/<name>/v<N>/model-credential.json    the signed model credential (provenance/credentials.py)
    models/<name>/v<N>/MODEL_CARD.md            the model card (Hugging Face convention), when the run has one
    datasets/<dvc md5>/croissant.json           the training set's card (Croissant 1.1 with RAI fields)
    datasets/<dvc md5>/DATASHEET.md             its readable datasheet
    datasets/<dvc md5>/ATTRIBUTION.md           who must be credited
    datasets/<dvc md5>/training-works.jsonl     the training works: record id (the sha256 of the work's file),
                                                creator, licence, perceptual hash, credited; no other field
    rights/transparency.json                    rights holders' requests: counts by kind and state, median days
    README.md                                   how to verify an artwork and look up a work with this folder alone
    log/entries.jsonl, log/head.json            the ledger's public log and its signed head
    index.json                                  what is here, the tool version, the anchor's fingerprint

Nothing private goes in: no key, no local path, no user or host name (tests/test_bundle.py scans for them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from atelier import paths
from atelier.io import write_bytes, write_json, write_text
from atelier.version import code_version
from provenance import credentials, ledger, publiclog, rights_requests, signed_json
from provenance.keys import ensure_signing_identity

SCHEMA = "atelier.bundle/1"
ANCHOR = Path("trust") / "ca.pem"
LOG = Path("log")
RUN_CARDS = {"MODEL_CARD.md": "cards/MODEL_CARD.md"}
DATASET_FILES = {
    "croissant.json": "cards/croissant.json",
    "DATASHEET.md": "cards/DATASHEET.md",
    "ATTRIBUTION.md": "ATTRIBUTION.md",
}


TRAINING_WORKS = "training-works.jsonl"
TRAINING_WORK_FIELDS = ("record_id", "creator", "license_spdx", "phash", "credited")
README = """# Atelier verification bundle: {model}

Everything here is public: the trust anchor (a CA certificate, never a key), the signed model credentials and cards,
the training sets' cards and the index of their works, the ledger's public log with its signed head, and the rights
holders' transparency report. `index.json` lists every file with its sha256, signed under the anchor.

## Verify an artwork

    pip install "atelier[audit]"        # c2pa, Pillow, cryptography: no torch, MLflow or Prefect
    atelier audit --bundle THIS_FOLDER ARTWORK.png [--html report.html]

Verdicts and exit codes: verified 0, tampered 1, failed 5 (a record it names does not hold), recovered 3 (no
credentials; found in the log by watermark or perceptual hash), not an Atelier artwork 4.

## Was my work used?

    atelier rights lookup --bundle THIS_FOLDER MY_WORK.png      # or --name "My Name"

`datasets/<md5>/training-works.jsonl` lists each training set's works by record id (the sha256 of the work's file),
creator, licence and perceptual hash; `models/<name>/v<N>/model-credential.json` names the training set (its md5)
of each model version. A crop or a heavy edit may not match: no match is not proof that a work was not used.
"""


class BundleError(ValueError):
    """The bundle folder cannot be used (missing anchor, unreadable log, ...): the message says which file."""


def publish(folder: Path, model_name: str | None = None) -> dict:
    """Write the bundle for every registered version of the model into `folder` (created, or refreshed in place:
    the files Atelier writes are replaced, nothing else is touched); return what was written."""
    from atelier.config import load_params
    from registry import tracking

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BundleError(f"{folder} is a file; name a folder for the bundle")
    if folder.resolve().is_relative_to(ensure_signing_identity().folder):
        raise BundleError(f"{folder} is inside the signing folder; publish elsewhere")
    model_name = model_name or load_params().registry.model_name
    identity = ensure_signing_identity()
    write_text(folder / ANCHOR, identity.ca_pem())
    versions = tracking.all_versions(model_name)
    cache = paths.MODELS / "registry-cache"
    for info in versions:
        run_dir = cache / f"v{info['version']}" / "run"
        fetched = {}
        for name in ("summary.json", *set(RUN_CARDS.values()) | set(DATASET_FILES.values())):
            try:
                fetched[name] = tracking.download_run_file(info["run_id"], name, run_dir)
            except Exception:  # noqa: BLE001 (MLflow raises several kinds): older runs lack the cards
                continue
        if "summary.json" not in fetched or "ATTRIBUTION.md" not in fetched:
            continue  # not a training run of this pipeline (e.g. registered by hand): nothing to vouch for
        summary = json.loads(fetched["summary.json"].read_text(encoding="utf-8"))
        credential = credentials.ensure(
            info, summary, _sha256(fetched["ATTRIBUTION.md"].read_bytes()), code_version(), identity, run_dir.parent
        )
        model_dir = folder / "models" / _safe(model_name) / f"v{info['version']}"
        write_json(model_dir / credentials.FILE_NAME, credential)
        for target, artifact in RUN_CARDS.items():
            if artifact in fetched:
                write_bytes(model_dir / target, fetched[artifact].read_bytes())
        data_dir = folder / "datasets" / _safe(info["tags"]["dataset_md5"])
        for target, artifact in DATASET_FILES.items():
            if artifact in fetched:
                write_bytes(data_dir / target, fetched[artifact].read_bytes())
        _training_works(info["tags"]["dataset_md5"], data_dir / TRAINING_WORKS)
    conn = ledger.open_ledger()
    try:
        entries = publiclog.export_public_log(conn, folder / LOG, identity)
        write_json(folder / "rights" / "transparency.json", rights_requests.transparency(conn))
    finally:
        conn.close()
    write_text(folder / "README.md", README.format(model=model_name))
    files = {
        p.relative_to(folder).as_posix(): _sha256(p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "index.json" and not p.name.startswith(".")
    }
    index = {
        "schema": SCHEMA,
        "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": f"Atelier {code_version()}",
        "model": model_name,
        "trust_anchor": signed_json.anchor_description(identity.ca_pem()),
        "log_entries": entries,
        "files": files,
    }
    write_json(folder / "index.json", signed_json.sign(index, identity))
    return index


@dataclass
class Bundle:
    """A published bundle, read and checked once for many artworks."""

    folder: Path
    anchor_pem: str
    credentials: dict[tuple[str, str], dict]  # (model name, version) -> signed credential
    cards: dict[str, bytes]  # sha256 -> a dataset card's bytes
    attribution: dict[str, str]  # sha256 -> an attribution list's text
    artworks: dict[str, dict]  # artwork id -> its latest public log entry
    log_problems: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that differ from index.json


def open_bundle(folder: Path) -> Bundle:
    """Read a bundle; raise BundleError when it has no usable trust anchor or log. Problems with individual files are
    kept in `problems` / `log_problems` and fail the checks that need them."""
    folder = Path(folder)
    anchor = folder / ANCHOR
    if not anchor.is_file():
        raise BundleError(
            f"{folder}: no trust anchor ({ANCHOR} is missing); this is not a published bundle "
            "(`atelier publish DIR` writes one)"
        )
    anchor_pem = anchor.read_text(encoding="ascii", errors="replace")
    try:
        signed_json.anchor_description(anchor_pem)
    except ValueError as exc:
        raise BundleError(f"{anchor}: not a PEM certificate ({exc})") from None
    problems = _index_problems(folder, anchor_pem)
    creds = {}
    for path in sorted(folder.glob(f"models/*/v*/{credentials.FILE_NAME}")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            model = doc["payload"]["model"]
            creds[(model["name"], str(model["version"]))] = doc
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path.relative_to(folder)}: not a model credential ({exc})")
    cards = {_sha256(p.read_bytes()): p.read_bytes() for p in folder.glob("datasets/*/croissant.json")}
    attribution = {
        _sha256(p.read_bytes()): p.read_text(encoding="utf-8") for p in folder.glob("datasets/*/ATTRIBUTION.md")
    }
    try:
        entries, head = publiclog.read_public_log(folder / LOG)
    except (FileNotFoundError, ValueError) as exc:
        raise BundleError(f"{folder / LOG}: {exc}") from None
    log_problems = publiclog.verify_public_log(entries, head, anchor_pem)
    artworks = {}
    for entry in entries:  # the latest entry for an artwork wins
        if entry.get("kind") == "artwork" and isinstance(entry.get("entry"), dict):
            artworks[entry["key"]] = entry["entry"]
    return Bundle(folder, anchor_pem, creds, cards, attribution, artworks, log_problems, problems)


def _index_problems(folder: Path, anchor_pem: str) -> list[str]:
    """A signed index.json whose signature fails, files whose bytes differ from the sha256 it lists, or that it lists
    and are gone."""
    index_file = folder / "index.json"
    if not index_file.is_file():
        return ["index.json is missing"]
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        files = index["payload"]["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"index.json is unreadable ({exc})"]
    problems = [f"index.json: {p}" for p in signed_json.verify(index, anchor_pem)]
    for name, sha in files.items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"index.json lists a path outside the bundle: {name}")
        elif not path.is_file():
            problems.append(f"{name} is listed in index.json but missing")
        elif _sha256(path.read_bytes()) != sha:
            problems.append(f"{name} differs from the sha256 in index.json")
    return problems


def _training_works(dataset_md5: str, out: Path) -> None:
    """The training set's works, one JSON line each (TRAINING_WORK_FIELDS only), when its records are here."""
    from atelier.lineage import training_rows

    try:
        rows = training_rows(dataset_md5)
    except FileNotFoundError:
        return  # the records of an old version are not here: its card and attribution list still are
    lines = [json.dumps({k: r.get(k) for k in TRAINING_WORK_FIELDS}, sort_keys=True) for r in rows]
    write_text(out, "\n".join(sorted(lines)) + "\n")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe(name: str) -> str:
    """A path component from a name (model name, md5): no separators, no dots at the start."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).lstrip(".")
    return cleaned or "_"
