import pandas as pd
import pytest

from atelier.config import PolicyParams
from atelier.licenses import normalise
from atelier.rights import decide, normalise_name, opt_outs_of, read_opt_outs
from stages.license import attribution_markdown, license_records

POLICY = PolicyParams(commercial=True, allow_share_alike=True, allow_no_derivatives=False)
NO_OPT_OUTS = opt_outs_of()


@pytest.mark.parametrize(
    "raw,spdx",
    [
        ("CC BY 4.0", "CC-BY-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("  CC0-1.0 ", "CC0-1.0"),
        ("Public Domain Mark 1.0", "LicenseRef-PDM-1.0"),
        ("https://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0"),
        ("CC-BY-4.0 OR CC-BY-NC-4.0", "CC-BY-4.0"),
        ("All rights reserved", "LicenseRef-All-Rights-Reserved"),
    ],
)
def test_normalise_known(raw, spdx):
    assert normalise(raw)[0] == spdx


@pytest.mark.parametrize(
    "raw,status",
    [
        ("", "missing"),
        (None, "missing"),
        ("free for whatever lol", "unknown"),
        ("CC-BY-7.5-MOON", "unknown"),
        ("CC-BY-4.0 AND WTFPL-ish", "unknown"),
    ],
)
def test_normalise_unknown_fails_closed(raw, status):
    spdx, terms, got = normalise(raw)
    assert got == status and terms is None


def test_and_expression_takes_the_strictest_terms():
    _, terms, _ = normalise("CC-BY-4.0 AND CC-BY-NC-4.0")
    assert terms.permits_training and not terms.permits_commercial


def _rec(**kw):
    return {
        "record_id": "r1",
        "creator": "Ann",
        "title": "T",
        "source_url": "u",
        "source_uri": "f",
        "license_raw": "CC-BY-4.0",
        "license_url": "",
        "noai": False,
        **kw,
    }


@pytest.mark.parametrize(
    "kw,reason",
    [
        ({}, "allowed:CC-BY-4.0"),
        ({"license_raw": "CC BY-NC 4.0"}, "license_forbids:non_commercial"),
        ({"license_raw": "CC-BY-ND-4.0"}, "license_forbids:no_derivatives"),
        ({"license_raw": "All rights reserved"}, "license_forbids:training"),
        ({"license_raw": ""}, "license_missing"),
        ({"license_raw": "mystery"}, "license_unknown"),
        ({"noai": True}, "opted_out:noai_flag"),
        ({"creator": "  marta   OKAFOR "}, "opted_out:creator"),
    ],
)
def test_decide(kw, reason):
    opt = opt_outs_of(["Marta Okafor"])
    assert decide(_rec(**kw), POLICY, opt)["reason"] == reason


def test_policy_allowing_non_commercial():
    relaxed = PolicyParams(commercial=False, allow_share_alike=True, allow_no_derivatives=False)
    assert decide(_rec(license_raw="CC-BY-NC-4.0"), relaxed, NO_OPT_OUTS)["decision"] == "train"


def test_split_counts_and_attribution(tmp_path):
    clean = pd.DataFrame(
        [
            _rec(record_id="a"),
            _rec(record_id="b", license_raw="CC0-1.0", creator="Zed"),
            _rec(record_id="c", license_raw=""),
            _rec(record_id="d", creator="<b>Mal|lory</b>"),
        ]
    )
    train, excluded = license_records(clean, POLICY, NO_OPT_OUTS)
    assert len(train) + len(excluded) == len(clean) and list(excluded["record_id"]) == ["c"]
    md = attribution_markdown(train)
    assert "Ann" in md and "Zed" not in md and "<b>" not in md and "Mal\\|lory" in md


def test_opt_out_file(tmp_path):
    path = tmp_path / "opt.csv"
    path.write_text("kind,value,reason,added\ncreator,Ann  Lee,asked,2026-01-01\nrecord_id,abc,takedown,2026-01-02\n")
    listed = read_opt_outs(path)
    assert listed.creator == {"ann lee"} and listed.record_id == {"abc"}
    path.write_text("kind,value\nplanet,Mars\n")
    with pytest.raises(ValueError, match="line 2"):
        read_opt_outs(path)


@pytest.mark.parametrize(
    "raw,url,status",
    [
        ("CC-BY-4.0", "https://creativecommons.org/licenses/by-nc/4.0/", "conflict"),
        ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/", "ok"),
        ("CC BY 4.0", "https://example.org/about-our-licensing", "ok"),  # not a license URL: no claim to compare
        ("", "https://creativecommons.org/licenses/by-nc/4.0/", "ok"),  # the URL alone is the license statement
    ],
)
def test_license_text_and_url_must_agree(raw, url, status):
    assert normalise(raw, url)[2] == status


def test_conflicting_text_and_url_fail_closed():
    d = decide(
        _rec(license_raw="CC-BY-4.0", license_url="https://creativecommons.org/licenses/by-nc/4.0/"),
        POLICY,
        NO_OPT_OUTS,
    )
    assert d["decision"] == "exclude" and d["reason"] == "license_conflict"


def test_takedown_writes_formula_looking_names_safely_and_still_matches_them(tmp_path, monkeypatch):
    from app.takedown import add_opt_out
    from atelier import paths

    path = tmp_path / "opt_out.csv"
    path.write_text("kind,value,reason,added\ncreator,'Abdul Karim,asked,2026-11-01\n")
    monkeypatch.setattr(paths, "OPT_OUT", path)
    name = '=HYPERLINK("http://evil.example","x")'
    assert add_opt_out("creator", name, "-2+3 reasons") is True
    lines = path.read_text().splitlines()
    assert lines[-1].startswith("creator,\"'=HYPERLINK(") and ",'-2+3 reasons," in lines[-1]  # inert in a sheet
    listed = read_opt_outs(path)["creator"]
    assert normalise_name(name) in listed and normalise_name("'Abdul Karim") in listed  # read back as written
    assert add_opt_out("creator", name, "again") is False  # matched: not added twice
