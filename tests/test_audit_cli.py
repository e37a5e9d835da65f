"""`atelier audit` options: each one does what it says or is refused with exit 2 and a one-line message; an unusable
signing folder is a message, never a traceback. Run through the real CLI, with ATELIER_SIGNING_DIR in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from app.cli import main
from atelier import paths
from provenance.keys import create_signing_identity
from tests.test_audit_report import artwork_png


def audit(capsys, *args: str) -> tuple[int, str, str]:
    """Run `atelier audit ARGS` in this process; return (exit code, stdout, stderr)."""
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args: str) -> str:
    """`atelier audit ARGS` must exit 2 with one line `atelier: ...` on stderr; return that line."""
    code, out, err = audit(capsys, *args)
    assert code == 2, (code, out, err)
    assert err.startswith("atelier: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def art(tmp_path) -> str:
    return str(artwork_png(tmp_path / "art.png"))


def test_options_that_cannot_be_honoured_are_refused(capsys, tmp_path, art):
    assert "needs artwork paths" in refused(capsys)
    assert "takes no artwork paths (got 1)" in refused(capsys, "--dataset", art)
    assert "cannot take --no-lineage" in refused(capsys, "--dataset", "--no-lineage")
    assert "cannot take --bundle" in refused(capsys, "--dataset", "--bundle", str(tmp_path))
    assert "is a folder" in refused(capsys, art, "--html", str(tmp_path))
    assert "does not exist" in refused(capsys, art, "--html", str(tmp_path / "no-such-folder" / "audit.html"))
    assert "does not exist" in refused(capsys, art, "--html", f"{art}/audit.html")  # a file where a folder must be
    assert (
        "--bundle" in (err := refused(capsys, art, "--bundle", str(tmp_path / "no-bundle"))) and "does not exist" in err
    )
    assert "is not a folder" in refused(capsys, art, "--bundle", art)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: a read-only folder stops only other users")
def test_html_into_a_read_only_folder_is_refused(capsys, tmp_path, art):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "cannot write there" in refused(capsys, art, "--html", str(locked / "audit.html"))


def _identity(tmp_path):
    folder = tmp_path / "signing"
    create_signing_identity(folder, subject="Audit CLI test")
    return folder


@pytest.mark.parametrize(
    "break_it, said",
    [
        (lambda f: os.chmod(f, 0o755), "mode 0755 lets others list it"),
        (lambda f: (f / "ca.pem").unlink(), "ca.pem"),  # no trust anchor: the audit never makes a new one
    ],
)
def test_an_unusable_signing_folder_is_a_message_and_exit_2(capsys, monkeypatch, tmp_path, art, break_it, said):
    folder = _identity(tmp_path)
    break_it(folder)
    monkeypatch.setenv("ATELIER_SIGNING_DIR", str(folder))
    err = refused(capsys, art, "--no-lineage")
    assert said in err and str(folder) in err
    if said == "ca.pem":
        assert not (folder / "ca.pem").exists()  # no new CA was made in its place


def test_a_signing_folder_that_does_not_hold_an_identity_is_refused(capsys, monkeypatch, art):
    inside = paths.ROOT / "no-such-signing-folder"  # inside the repository, and empty: nothing may be made there
    monkeypatch.setenv("ATELIER_SIGNING_DIR", str(inside))
    assert str(inside) in refused(capsys, art, "--no-lineage")
    assert not inside.exists()


def test_the_console_script_prints_no_traceback(tmp_path):
    folder = _identity(tmp_path)
    os.chmod(folder, 0o755)
    env = {**os.environ, "ATELIER_SIGNING_DIR": str(folder)}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "--no-lineage", str(artwork_png(tmp_path / "art.png"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"atelier: {folder}: mode 0755 lets others list it; use a private folder (`chmod 700`)"
    ]


def _tables(tmp_path, monkeypatch) -> None:
    """A two-record training set and one exclusion in tmp_path, put where the dataset audit reads them."""
    train = pd.DataFrame(
        [
            {
                "record_id": f"{n:064x}",
                "source_uri": f"demo://{n}",
                "license_raw": "CC-BY-4.0",
                "license_url": None,
                "license_spdx": "CC-BY-4.0",
                "creator": f"Creator {n}",
                "title": f"Work {n}",
                "source_url": None,
                "requires_attribution": True,
                "noai": False,
            }
            for n in (1, 2)
        ]
    )
    excluded = pd.DataFrame(
        [{"record_id": "f" * 64, "license_spdx": None, "reason": "license_missing", "opted_out": False}]
    )
    train.to_parquet(tmp_path / "train.parquet")
    excluded.to_parquet(tmp_path / "excluded.parquet")
    (tmp_path / "ATTRIBUTION.md").write_text("| Work 1 | Creator 1 |\n")  # Creator 2 is missing: one problem
    monkeypatch.setattr(paths, "TRAIN_RECORDS", tmp_path / "train.parquet")
    monkeypatch.setattr(paths, "EXCLUDED_RECORDS", tmp_path / "excluded.parquet")
    monkeypatch.setattr(paths, "ATTRIBUTION", tmp_path / "ATTRIBUTION.md")
    monkeypatch.setattr(paths, "OPT_OUT", tmp_path / "no-opt-outs.csv")


def test_dataset_html_writes_the_dataset_report(capsys, monkeypatch, tmp_path):
    _tables(tmp_path, monkeypatch)
    page = tmp_path / "dataset.html"
    code, out, err = audit(capsys, "--dataset", "--html", str(page))
    assert code == 1 and "train_records: 2" in out, (out, err)  # 1: the audit found a problem
    html = page.read_text(encoding="utf-8")
    assert "<title>Atelier dataset audit</title>" in html and "<b>2</b>training records" in html
    assert "creator &#x27;Creator 2&#x27; of record" in html and "missing from ATTRIBUTION.md" in html
