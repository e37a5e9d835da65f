"""Every path the project reads or writes, defined once. dvc.yaml mirrors these."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
OPT_OUT = ROOT / "policy" / "opt_out.csv"
ERASURES = ROOT / "policy" / "erasures.csv"  # tombstones of erased records (atelier/erasures.py)

DATA = ROOT / "data"
DEMO_SOURCE = DATA / "sources" / "demo"

RAW = DATA / "raw"
RAW_PACKS = RAW / "packs"  # the raw store (atelier/rawstore.py)
RAW_RECORDS = RAW / "records.parquet"

CLEAN = DATA / "clean"
CLEAN_PACKS = CLEAN / "packs"  # the clean images, one Parquet pack per chunk (stages/clean.py)
CLEAN_RECORDS = CLEAN / "records.parquet"
CLEAN_REJECTS = CLEAN / "rejects.parquet"
CLEAN_DECODED = CLEAN / "decoded.parquet"
CLEAN_CHUNKS = CLEAN / "chunks.parquet"

LICENSED = DATA / "licensed"
TRAIN_RECORDS = LICENSED / "train.parquet"
EXCLUDED_RECORDS = LICENSED / "excluded.parquet"
ATTRIBUTION = LICENSED / "ATTRIBUTION.md"
LICENSE_SUMMARY = LICENSED / "summary.json"
DATASET_CARD = LICENSED / "croissant.json"  # the training set's card: Croissant 1.1 JSON-LD (atelier/cards.py)
DATASHEET = LICENSED / "DATASHEET.md"  # the same card in words

MODELS = ROOT / "models"
CLIP_DIR = MODELS / "clip"
EVALUATOR_DIR = MODELS / "evaluator"  # a second CLIP, trained with another seed, that scores the generator
AUTOENCODER_DIR = MODELS / "autoencoder"
DIFFUSION_DIR = MODELS / "diffusion"
CHAMPION = MODELS / "champion.json"

REPORTS = ROOT / "reports"
TRAIN_CURVES = REPORTS / "curves"
TRAIN_SUMMARY = REPORTS / "train.json"
EVAL_REPORT = REPORTS / "eval.json"
EVAL_GRID = REPORTS / "samples.png"
PROMOTION = REPORTS / "promotion.json"
REVIEW_FLAGS = REPORTS / "review_flags.json"  # artworks reviewers flagged as looking like an existing work
TIMINGS = REPORTS / "timings"  # seconds per stage: not tracked by DVC (they differ on every run)

ARTWORKS = ROOT / "artworks"
GALLERY = ARTWORKS / "index.html"
LEDGER = ROOT / "ledger" / "ledger.sqlite"

# Resumable-training state (atelier/checkpoint.py), one folder per stage. Deliberately outside the DVC outputs, which
# DVC deletes before it runs a stage; git- and dvc-ignored.
CHECKPOINTS = ROOT / ".atelier" / "checkpoints"
# The ingest stage's incremental index (fingerprint -> raw copy): outside data/raw, whose hash must not depend on
# file paths and times.
INGEST_INDEX = ROOT / ".atelier" / "ingest-index.parquet"
INGEST_COMPACTED = ROOT / ".atelier" / "ingest-index.compacted"  # written once the raw store matches the index

MLARTIFACTS = ROOT / "mlartifacts"
MLFLOW_DB = ROOT / "mlflow.db"
SCHEMA = ROOT / "provenance" / "manifest.schema.json"


def relative(path: Path) -> str:
    """`path` relative to the project root when inside it (as tables store it), else absolute."""
    path = Path(path)
    if not (path.is_absolute() and ".." not in path.parts and path.is_relative_to(ROOT)):
        path = path.resolve()  # relative, or with "..": resolve (slower, so not for the paths we build ourselves)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def absolute(stored: str) -> Path:
    """Inverse of relative(): a stored path back to an absolute one."""
    path = Path(stored)
    return path if path.is_absolute() else ROOT / path
