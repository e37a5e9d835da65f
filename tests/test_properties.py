"""Properties (hypothesis): the license normaliser and the metadata parsers never crash on arbitrary input, and
nothing is allowed to train unless a known license permits it and no opt-out applies. A few seconds in all."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier.config import Columns, PolicyParams
from atelier.licenses import TERMS, normalise
from atelier.rights import decide, normalise_name, opt_outs_of
from atelier.sources.folder import folder_item
from atelier.sources.metadata import MetadataRow, parse_csv, parse_jsonl
from stages.ingest import ingest_item
from stages.license import _md

# No .hypothesis/ folder in the repository (it is not git-ignored, and workspaces copy untracked files): no example
# database, and hypothesis's other caches go to the system's temporary folder.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "atelier-hypothesis"))
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces people really write, permitting or not, plus operators, parentheses and noise, so that generated strings
# reach the parser's interesting corners (plain random text almost never names a license).
KNOWN = [
    *TERMS,
    "CC BY 4.0",
    "cc-by-sa-4.0",
    "CC BY-NC 4.0",
    "cc0",
    "Public Domain Mark 1.0",
    "public domain",
    "All rights reserved",
    "copyright",
    "mit license",
    "Apache 2.0",
    "CC-BY-7.5-MOON",
    "WTFPL",
    "GPL-3.0",
    "https://creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by-nc-nd/4.0/deed.en",
    "https://creativecommons.org/publicdomain/zero/1.0/",
    "creativecommons.org/licenses/by/2.5",
    "noai",
]
PIECES = st.one_of(
    st.sampled_from(KNOWN), st.sampled_from(["OR", "AND", "or", "and", "WITH", "(", ")", " ", ","]), st.text(max_size=8)
)
LICENSE_TEXT = st.one_of(
    st.lists(PIECES, max_size=9).map(" ".join), st.lists(PIECES, max_size=9).map("".join), st.text(max_size=60)
)
# Squashed forms of every token that can grant training (see atelier/licenses.py: TERMS, _ALIASES, _CC_URL).
PERMITTING = [
    "cc0",
    "cczero",
    "publicdomain",
    "pdm",
    "mit",
    "apache2.0",
    "ccby",
    "creativecommonsby",
    "creativecommons.org/licenses/by",
    "nocnc",
    "nocopyrightnoncommercial",
    "licenserefrsnoc",
    "rightsstatements.org/vocab/noc",
    "licenserefrsnkc",
    "rightsstatements.org/vocab/nkc",
    "noknowncopyright",
]  # rightsstatements.org's NoC-NC is a non-commercial permission; NKC permits
#                                    training only where the policy's allow_no_known_copyright says so (license stage)


def squash(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.lower())


@SETTINGS
@given(LICENSE_TEXT, st.one_of(st.none(), st.text(max_size=40), st.sampled_from(KNOWN)))
def test_normalise_never_crashes_and_only_a_known_token_permits_training(raw, url):
    spdx, terms, status = normalise(raw, url)
    assert status in ("ok", "missing", "unknown", "conflict")
    assert (terms is None) == (status != "ok") and (spdx is None) == (status != "ok")
    if status == "ok":
        assert all(part in TERMS for part in spdx.split(" AND "))
    if terms is not None and terms.permits_training:
        used = raw if (raw or "").strip() else url
        assert any(token in squash(used) for token in PERMITTING), (raw, url, spdx)


@SETTINGS
@given(LICENSE_TEXT, LICENSE_TEXT)
def test_and_is_never_more_permissive_than_its_parts(a, b):
    _, both, _ = normalise(f"({a}) AND ({b})")
    if both is not None and both.permits_training:
        for part in (a, b):
            _, alone, _ = normalise(f"({part})")
            assert alone is not None and alone.permits_training, (a, b)
    _, reserved, _ = normalise(f"({a}) AND LicenseRef-All-Rights-Reserved")
    assert reserved is None or not reserved.permits_training


RECORDS = st.fixed_dictionaries(
    {
        "record_id": st.text(max_size=12),
        "creator": st.one_of(st.text(max_size=20), st.sampled_from(["Marta Okafor", " marta  OKAFOR "])),
        "license_raw": st.one_of(st.none(), LICENSE_TEXT),
        "license_url": st.one_of(st.none(), st.text(max_size=20), st.sampled_from(KNOWN)),
        "noai": st.booleans(),
    }
)
POLICIES = st.builds(
    PolicyParams, commercial=st.booleans(), allow_share_alike=st.booleans(), allow_no_derivatives=st.booleans()
)


@SETTINGS
@given(RECORDS, POLICIES, st.booleans(), st.booleans())
def test_decide_never_trains_on_what_is_unknown_flagged_or_opted_out(record, policy, creator_listed, id_listed):
    creator_listed = creator_listed and bool(normalise_name(record["creator"]))  # a name needs a letter or digit
    opt_outs = opt_outs_of(
        [record["creator"] if creator_listed else "Marta Okafor"], [record["record_id"]] if id_listed else []
    )
    out = decide(record, policy, opt_outs)
    _, terms, status = normalise(record["license_raw"], record["license_url"])
    refused = (
        status != "ok"
        or record["noai"]
        or creator_listed
        or id_listed
        or normalise_name(record["creator"]) == "marta okafor"
    )
    if refused:
        assert out["decision"] == "exclude", (record, out)
    if out["decision"] == "train":
        assert terms.permits_training and out["permits_training"]
        assert not (policy.commercial and not terms.permits_commercial)
        assert not (terms.no_derivatives and not policy.allow_no_derivatives)
        assert not (terms.share_alike and not policy.allow_share_alike)
        assert out["reason"] == f"allowed:{out['license_spdx']}"
    else:
        assert out["reason"] and not out["reason"].startswith("allowed")


def _storable(value: object) -> None:
    """A value the stages will write to Parquet must be encodable text (no lone surrogates)."""
    json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(
            st.dictionaries(
                st.sampled_from(["file_name", "title", "noai", "x"]),
                st.one_of(
                    st.text(max_size=10), st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)
                ),
                max_size=4,
            ),
            max_size=4,
        ).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
    )
)
def test_parse_jsonl_never_crashes_and_never_loses_a_line(data):
    rows = parse_jsonl(data)
    lines = [line for line in data.decode("utf-8-sig", "surrogateescape").split("\n") if line.strip()]
    assert len(rows) == len(lines)
    for row in rows:
        if row.error is not None:
            assert row.error.startswith("metadata_malformed: line ") and row.fields == {}
        _storable(row.fields)


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=4), max_size=5).map(
            lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
        ),
    )
)
def test_parse_csv_never_crashes_and_rows_are_storable(data):
    for row in parse_csv(data):
        assert row.error is None or (row.error.startswith("metadata_malformed: line ") and row.fields == {})
        _storable(row.fields)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("props")
    (root / "src").mkdir()
    (root / "src" / "real.png").write_bytes(b"\x89PNG not really")
    return root


FIELD = st.one_of(
    st.text(max_size=30),
    st.none(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["real.png", "..", "../src/real.png", "/etc/passwd", "real.png\x00", ".", "", "a" * 400]),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(Columns().model_dump().values())), FIELD, max_size=8))
def test_ingest_row_never_crashes_and_its_record_can_be_stored(folder, fields):
    item = folder_item(MetadataRow(1, fields), folder / "src", "p", Columns(), max_file_bytes=2**20)
    record, data = ingest_item(item, "p", Columns(), limits=(2**20, 10_000))
    assert (record["ingest_error"] is None) == (data is not None)
    if record["ingest_error"] is not None:
        assert re.match(r"^[a-z_]+: ", record["ingest_error"]), record["ingest_error"]
    assert isinstance(record["noai"], bool)
    pd.DataFrame([record]).to_parquet(io.BytesIO())


@SETTINGS
@given(st.text(max_size=80))
def test_markdown_cells_cannot_break_out(text):
    cell = _md(text)
    assert "\n" not in cell and "\r" not in cell and "<" not in cell
    assert not re.search(r"(?<!\\)\|", cell.replace("\\\\", ""))
    assert cell[:1] not in ("=", "+", "-", "@")
