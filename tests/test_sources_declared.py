"""Sources declared once: a source in params.yaml whose path is not a dep of the ingest stage in dvc.yaml stops the
run before any stage, naming the source and the fix; `atelier sources add` writes both files in one step and keeps
their comments."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atelier.config import ConfigError, IngestParams, load_params
from atelier.declared import (
    SourcesUndeclared,
    add_source,
    add_source_text,
    check,
    problems,
    read_path,
    require_declared,
    sequence_end,
)
from tests.conftest import REPO, copy_repo, edit_params

DEMO = {"name": "demo", "kind": "folder", "path": "data/sources/demo"}


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m ARGS` in a workspace (its own copy of the code is imported), as a user or DVC would run it."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )


def ingest(*sources: dict) -> IngestParams:
    return IngestParams.model_validate({"sources": list(sources)})


def stages(*deps: str) -> dict:
    return {"ingest": {"cmd": "python -m stages.ingest", "deps": ["stages/ingest.py", "atelier/sources", *deps]}}


def errors(found) -> list[tuple[str, str]]:
    return [(p.source, p.path) for p in found if p.level == "error"]


def inserted(old: str, new: str) -> list[str]:
    """The lines `new` adds to `old`, asserting that nothing else changed and that they are one block."""
    ops = [
        op
        for op in difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    assert len(ops) == 1 and ops[0][0] == "insert", ops
    return new.splitlines()[ops[0][3] : ops[0][4]]


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """One pristine copy of the project; tests copy its params.yaml and dvc.yaml, or the whole of it."""
    return copy_repo(tmp_path_factory.mktemp("pristine"))


def test_the_demo_is_declared():
    params = load_params(REPO / "params.yaml")
    assert [s.name for s in params.ingest.sources] == ["demo"]
    assert problems(REPO) == []
    assert require_declared(REPO) == []


def test_undeclared_source_stops_the_ingest_process_and_the_run(tmp_path):
    root = copy_repo(tmp_path / "ws")
    edit_params(root, ingest={"sources": [DEMO, {"name": "mine", "kind": "folder", "path": "data/sources/mine"}]})

    proc = run(root, "stages.ingest")  # what `dvc repro` runs
    assert proc.returncode != 0
    assert "SourcesUndeclared" in proc.stderr and "source 'mine' (folder) reads data/sources/mine" in proc.stderr
    assert "\n      - data/sources/mine\n" in proc.stderr  # the exact line for stages.ingest.deps
    assert "atelier sources add mine data/sources/mine --kind folder" in proc.stderr
    assert not (root / "data/raw").exists()  # stopped before any work

    proc = run(root, "app.cli", "run")  # the pre-flight, before the Prefect flow and any stage
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("atelier: ") and "source 'mine'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / "data/sources/demo").exists() and not (root / "dvc.lock").exists()  # no stage ran

    proc = run(root, "app.cli", "sources", "list")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:4] == ["demo", "folder", "data/sources/demo", "yes"]
    assert lines[2].split()[:4] == ["mine", "folder", "data/sources/mine", "NO:"]

    # the command the message names adds the missing dep of a source that params.yaml has already
    params_before = (root / "params.yaml").read_text()
    dvc_before = (root / "dvc.yaml").read_text()
    proc = run(root, "app.cli", "sources", "add", "mine", "data/sources/mine", "--kind", "folder")
    assert proc.returncode == 0, proc.stderr
    assert "in params.yaml ingest.sources already" in proc.stdout and "does not exist yet" in proc.stdout
    assert (root / "params.yaml").read_text() == params_before
    assert inserted(dvc_before, (root / "dvc.yaml").read_text()) == ["      - data/sources/mine"]
    proc = run(root, "app.cli", "sources", "check")
    assert proc.returncode == 0 and "every source" in proc.stdout, proc.stderr


def test_sources_add_is_one_step_and_keeps_comments(tmp_path):
    root = copy_repo(tmp_path / "ws")
    params_before, dvc_before = (root / "params.yaml").read_text(), (root / "dvc.yaml").read_text()
    (root / "data/sources/laion").mkdir(parents=True)

    proc = run(
        root, "app.cli", "sources", "add", "laion", "./data/sources/laion/{00000..00009}.tar", "--kind", "webdataset"
    )
    assert proc.returncode == 0, proc.stderr
    assert "does not exist yet" not in proc.stdout
    params_text, dvc_text = (root / "params.yaml").read_text(), (root / "dvc.yaml").read_text()
    assert inserted(params_before, params_text) == [
        "    - name: laion",
        "      kind: webdataset",
        "      path: data/sources/laion/{00000..00009}.tar",
    ]
    assert inserted(dvc_before, dvc_text) == ["      - data/sources/laion"]
    assert params_text.count("#") == params_before.count("#") and dvc_text.count("#") == dvc_before.count("#")
    # the new item follows the demo's own commented lines, before the list's closing comments
    assert params_text.index("- name: laion") > params_text.index("#           license: license")
    source = load_params(root / "params.yaml").ingest.sources[-1]
    assert (source.name, source.kind, source.path) == ("laion", "webdataset", "data/sources/laion/{00000..00009}.tar")
    assert require_declared(root) == []

    notes = add_source(root, "hf", str(root / "data/sources/hf"), "parquet", image_column="img")
    assert any("does not exist yet" in n for n in notes)
    source = load_params(root / "params.yaml").ingest.sources[-1]
    assert (source.path, source.image_column) == ("data/sources/hf", "img")  # stored relative to the project
    assert "      - data/sources/hf\n" in (root / "dvc.yaml").read_text()
    assert require_declared(root) == []
    assert not list(root.glob(".*.tmp")) and not list(root.glob(".params.yaml.*"))  # atomic writes leave nothing


def test_sources_add_refuses_bad_and_duplicate_names(copied, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        (root / name).write_text((copied / name).read_text())
    before = {name: (root / name).read_text() for name in ("params.yaml", "dvc.yaml")}
    with pytest.raises(ConfigError, match=r"source name 'My Images'.*\^\[a-z0-9_-\]\+\$"):
        add_source(root, "My Images", "data/sources/mine")
    with pytest.raises(ConfigError, match="a source named 'demo' exists already"):
        add_source(root, "demo", "data/sources/other")
    with pytest.raises(ConfigError, match="source 'demo' is in params.yaml and declared in dvc.yaml already"):
        add_source(root, "demo", "./data/sources/demo/")
    with pytest.raises(ConfigError, match="--image-column is for parquet sources"):
        add_source(root, "mine", "data/sources/mine", "folder", image_column="img")
    assert {name: (root / name).read_text() for name in before} == before

    proc = run(copied, "app.cli", "sources", "add", "Bad!", "data/sources/x")
    assert proc.returncode == 2 and proc.stderr.startswith("atelier: source name 'Bad!'")


def test_sources_add_refuses_a_layout_it_cannot_edit_as_text(copied, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text((copied / "params.yaml").read_text())
    flow = yaml.safe_load((copied / "dvc.yaml").read_text())
    (root / "dvc.yaml").write_text(yaml.safe_dump(flow, default_flow_style=True))
    with pytest.raises(ConfigError, match="by hand"):
        add_source(root, "mine", "data/sources/mine")


def test_text_insertion_handles_indentless_lists_and_a_missing_last_newline():
    params = (
        "ingest:\n  sources:\n  - name: demo  # ours\n    kind: folder\n    path: data/sources/demo\n"
        "  # trailing\n  max_file_bytes: 10\nclean: {}\n"
    )
    dvc = "stages:\n  ingest:\n    cmd: x\n    deps:\n    - stages/ingest.py\n    - data/sources/demo"
    entry = {"name": "web", "kind": "urls", "path": "data/sources/web/urls #1.csv"}
    new_params, new_dvc = add_source_text(params, dvc, entry, "data/sources/web")
    assert yaml.safe_load(new_params)["ingest"]["sources"][-1] == entry
    assert "  # trailing\n  max_file_bytes" in new_params and "# ours" in new_params
    assert new_dvc.endswith("    - data/sources/demo\n    - data/sources/web\n")
    assert sequence_end(new_dvc.splitlines(keepends=True), ("stages", "ingest", "deps")) == (7, 4)
    with pytest.raises(ValueError, match="inline"):
        add_source_text(params, "stages:\n  ingest:\n    deps: [a, b]\n", {}, "data/sources/web")


def test_glob_and_brace_paths_are_covered_by_their_folder(tmp_path):
    root = tmp_path
    laion = {"name": "laion", "kind": "webdataset", "path": "data/sources/laion/{00000..00099}.tar"}
    hf = {"name": "hf", "kind": "parquet", "path": "./data/sources/hf/**/*.parquet"}
    web = {"name": "web", "kind": "urls", "path": "data/sources/web/urls.csv"}
    far = {"name": "far", "kind": "webdataset", "path": "/srv/images/{a,b}/shard-*.tar"}
    p = ingest(DEMO, laion, hf, web, far)
    assert [read_path(s) for s in p.sources] == [
        "data/sources/demo",
        "data/sources/laion",
        "data/sources/hf",
        "data/sources/web/urls.csv",
        "/srv/images",
    ]
    assert (
        check(
            p,
            stages(
                "data/sources/demo/",
                "./data/sources/laion",
                str(root / "data/sources/hf"),
                "data/sources/web",
                "/srv/images/",
            ),
            root,
        )
        == []
    )
    assert check(p, stages("data/sources", "/srv"), root) == []  # a parent folder covers everything below it
    found = check(
        p,
        stages(
            "data/sources/demo",
            "data/sources/laion/00000.tar",
            "data/sources/h",
            "data/sources/web/other.csv",
            "/srv/img",
        ),
        root,
    )
    assert errors(found) == [
        ("laion", "data/sources/laion"),
        ("hf", "data/sources/hf"),
        ("web", "data/sources/web/urls.csv"),
        ("far", "/srv/images"),
    ]
    assert [p.path for p in found if p.level == "warning"] == ["data/sources/h", "data/sources/web/other.csv"]
    # a shard dep below the pattern's folder is read (partly) by the source: not also a warning
    assert "data/sources/laion/00000.tar" not in [p.path for p in found if p.level == "warning"]


def test_a_dep_no_source_reads_is_a_warning_not_an_error(copied, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text((copied / "params.yaml").read_text())
    lines = (copied / "dvc.yaml").read_text().splitlines(keepends=True)
    ingest = lines.index("  ingest:\n")
    at = next(i for i, line in enumerate(lines) if i > ingest and line.split()[:2] == ["-", "data/sources/demo"])
    (root / "dvc.yaml").write_text("".join(lines[: at + 1] + ["      - data/sources/old/\n"] + lines[at + 1 :]))
    warnings = require_declared(root)  # does not raise
    assert [(w.level, w.path) for w in warnings] == [("warning", "data/sources/old")]
    assert "no source" in warnings[0].message and "atelier sources add" in warnings[0].message

    (root / "dvc.yaml").write_text("".join(lines[:at] + lines[at + 1 :]))
    with pytest.raises(SourcesUndeclared) as raised:
        require_declared(root)
    assert isinstance(raised.value, ConfigError) and "source 'demo'" in str(raised.value)
