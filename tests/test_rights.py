"""The rights policy (atelier/rights.py) holds however a work reaches Atelier: any spelling or alias of an opted-out
creator, a copy of the work from a second source, a museum's rights statement; and prompt refusal is hard to evade
and rarely wrong. Tables and images are built here; the license and clean stages' pure cores decide."""

from __future__ import annotations

import io
import os
import random
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from atelier.config import CleanParams, PolicyParams, load_params
from atelier.demo import PALETTES, STYLES, draw_artwork
from atelier.licenses import RIGHTS_STATEMENTS, normalise
from atelier.rights import decide, identify, normalise_name, opt_outs_of, prompt_refusal, read_opt_outs
from stages.clean import clean_records
from stages.license import attribution_markdown, license_records

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "atelier-hypothesis"))
POLICY = PolicyParams(commercial=True, allow_share_alike=True, allow_no_derivatives=False)
CLEAN = CleanParams(
    resolution=32, min_size=32, max_pixels=1_000_000, near_duplicate_hamming=load_params().clean.near_duplicate_hamming
)  # the threshold in force
ZOE = opt_outs_of(
    ["Zoë Müller"], aliases={"Zoë Müller": ["Zed Mueller", "@zmuller", "https://art.example.org/zmuller"]}
)


def _rec(**kw) -> dict:
    return {
        "record_id": "r1",
        "source_uri": "a/1.png",
        "creator": "Ann Lee",
        "title": "T",
        "source_url": "https://example.org/works/1",
        "license_raw": "CC0-1.0",
        "license_url": "",
        "noai": False,
        **kw,
    }


# --- one identity per creator ---------------------------------------------------------------------------------------

VARIANTS = [
    "Zoë Müller",
    unicodedata.normalize("NFD", "Zoë Müller"),
    "Ｚｏｅ Ｍｕｌｌｅｒ",
    "zoe-muller",
    "ZOË MÜLLER",
    "  zoë   müller ",
    "Zoe Mueller",
    "Müller, Zoë",
    "Zoë Müller & Ann Lee",
    "zоë müller",  # Cyrillic о
    "Zoë\u200bMüller",
    "Zed Mueller",
    "@zmuller",
    "https://art.example.org/zmuller/",
]


@pytest.mark.parametrize("creator", VARIANTS)
def test_every_spelling_and_alias_of_an_opted_out_creator_is_excluded(creator):
    d = decide(_rec(creator=creator), POLICY, ZOE)
    assert d["decision"] == "exclude" and d["reason"] == "opted_out:creator", creator


@pytest.mark.parametrize(
    "record",
    [
        _rec(creator="", source_url="https://art.example.org/zmuller/works/7"),  # under the profile URL
        _rec(creator="", source_url="https://social.example/@zmuller/1234"),  # the handle in a URL
    ],
)
def test_a_profile_url_or_handle_in_the_source_url_is_the_creator(record):
    assert identify(record, ZOE) == "zoe muller"
    assert decide(record, POLICY, ZOE)["reason"] == "opted_out:creator"


@pytest.mark.parametrize("creator", ["Zoe Miller", "Zoë Müllerová", "Chloé Müller", "Zoë", "Müller"])
def test_other_people_still_train(creator):
    assert decide(_rec(creator=creator), POLICY, ZOE)["decision"] == "train", creator


def test_opt_out_file_with_aliases_and_the_old_format(tmp_path):
    path = tmp_path / "opt.csv"
    path.write_text(
        "kind,value,reason,added,aliases\n"
        "creator,Zoë Müller,asked,2026-12-01,Zed Mueller|@zmuller|https://art.example.org/zmuller\n"
        "record_id,abc,takedown,2026-12-02,\n",
        encoding="utf-8",
    )
    listed = read_opt_outs(path)
    assert listed.creator == {"zoe muller"} and listed.record_id == {"abc"}
    assert identify(_rec(creator="@ZMuller"), listed) == "zoe muller"
    path.write_text("kind,value,reason,added\ncreator,Marta Okafor,asked,2026-11-01\n")  # no aliases column
    assert read_opt_outs(path).creator == {"marta okafor"}


def test_the_normal_form():
    assert normalise_name("Søren Łukasz-Æbelø") == "soren lukasz aebelo"
    assert normalise_name("O’Keeffe, Georgia") == normalise_name("OKeeffe Georgia") == "okeeffe georgia"
    assert normalise_name("Straße") == normalise_name("STRASSE")


# --- copies share a fate --------------------------------------------------------------------------------------------


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _raw(rows: list[dict]) -> pd.DataFrame:
    import hashlib

    out = []
    for i, r in enumerate(rows):
        out.append(
            {
                "record_id": hashlib.sha256(r["data"]).hexdigest(),
                "source": r.get("source", "s"),
                "source_uri": r["uri"],
                "ingest_error": None,
                "title": r.get("title", f"Work {i}"),
                "creator": r.get("creator", ""),
                "license_raw": r["license"],
                "license_url": "",
                "source_url": r.get("source_url", ""),
                "noai": False,
                "data": r["data"],
            }
        )
    return pd.DataFrame(out)


def _license(raw: pd.DataFrame, policy: PolicyParams = POLICY, opt_outs=ZOE):
    clean, rejects = clean_records(raw, lambda r: r["data"], CLEAN)
    return clean, rejects, *license_records(clean.drop(columns="data"), policy, opt_outs, rejects.drop(columns="data"))


ORIGINAL = draw_artwork("grid", "red", 128, random.Random(3))


def test_a_resized_reencoded_copy_under_cc0_from_a_second_source_shares_the_opt_out():
    copy = _png(ORIGINAL.resize((96, 96), Image.LANCZOS).convert("RGB"), "JPEG", quality=80)
    raw = _raw(
        [
            {"uri": "mirror/copy.jpg", "source": "mirror", "data": copy, "license": "CC0-1.0", "creator": "Uploader"},
            {
                "uri": "museum/original.png",
                "source": "museum",
                "data": _png(ORIGINAL),
                "license": "CC-BY-4.0",
                "creator": "Zoë Müller",
            },
        ]
    )
    clean, rejects, train, excluded = _license(raw)
    assert list(rejects["reason"]) == ["duplicate_near"]  # within clean.near_duplicate_hamming: one group
    assert train.empty and len(excluded) == 1
    row = excluded.iloc[0]
    assert row["source_uri"] == "mirror/copy.jpg" and row["reason"] == "group:opted_out:creator" and row["opted_out"]
    assert "museum/original.png" in row["excluded_because"] and row["group_size"] == 2


def test_near_duplicate_threshold_holds_for_augmented_copies():
    """Calibration of clean.near_duplicate_hamming on resized and re-encoded copies of demo-like images. Measured
    (40 images x 5 augmentations, 780 pairs of different images): 88.5% of copies within 4 bits, 95.5% within 12,
    98% within 16; different images never closer than 18 bits. The threshold in force must catch most copies and
    merge no different images; the copies it misses are why a copy's fate is also decided by its metadata."""
    from atelier.images import decode

    def phash(data: bytes) -> int:
        return int(decode(data, CLEAN).phash, 16)

    copies, originals = [], []
    for seed in range(16):
        style, palette = STYLES[seed % len(STYLES)], list(PALETTES)[seed % len(PALETTES)]
        img = draw_artwork(style, palette, 128, random.Random(seed))
        base = phash(_png(img))
        originals.append(base)
        for copy in (
            _png(img.resize((64, 64), Image.BICUBIC)),
            _png(img.convert("RGB"), "JPEG", quality=70),
            _png(img.resize((96, 96), Image.LANCZOS).convert("RGB"), "JPEG", quality=80),
            _png(img.resize((200, 200), Image.LANCZOS).convert("RGB"), "WEBP", quality=80),
        ):
            copies.append(bin(base ^ phash(copy)).count("1"))
    caught = sum(d <= CLEAN.near_duplicate_hamming for d in copies) / len(copies)
    apart = [bin(a ^ b).count("1") for i, a in enumerate(originals) for b in originals[i + 1 :]]
    assert caught >= 0.8, sorted(copies)
    assert min(apart) > CLEAN.near_duplicate_hamming, sorted(apart)[:5]


def test_an_exact_duplicate_under_cc0_and_nc_is_excluded_under_a_commercial_policy():
    data = _png(ORIGINAL)
    raw = _raw(
        [
            {"uri": "a/free.png", "data": data, "license": "CC0-1.0", "creator": "Ann Lee"},
            {"uri": "b/nc.png", "source": "b", "data": data, "license": "CC-BY-NC-4.0", "creator": "Bo Chen"},
        ]
    )
    _, rejects, train, excluded = _license(raw)
    assert list(rejects["reason"]) == ["duplicate_exact"]
    assert train.empty and excluded.iloc[0]["reason"] == "group:license_forbids:non_commercial"
    assert "b/nc.png" in excluded.iloc[0]["excluded_because"]
    relaxed = PolicyParams(commercial=False, allow_share_alike=True, allow_no_derivatives=False)
    _, _, train, _ = _license(raw, relaxed)
    row = train.iloc[0]  # the strictest terms of the copies, and every creator credited
    assert row["license_spdx"] == "CC0-1.0 AND CC-BY-NC-4.0" and row["requires_attribution"]
    assert not row["permits_commercial"] and row["credited"] == "Ann Lee; Bo Chen"
    assert "Ann Lee; Bo Chen" in attribution_markdown(train)


def test_attribution_needs_a_creator_a_source_url_or_a_title():
    base = _rec(license_raw="CC-BY-4.0", creator="", title="", source_url="")
    assert decide(base, POLICY, opt_outs_of())["reason"] == "attribution_impossible"
    assert decide({**base, "license_raw": "CC0-1.0"}, POLICY, opt_outs_of())["decision"] == "train"  # none needed
    by_url = {**base, "source_url": "https://example.org/w/9"}
    assert decide(by_url, POLICY, opt_outs_of())["decision"] == "train"
    train, _ = license_records(pd.DataFrame([by_url]), POLICY, opt_outs_of())
    md = attribution_markdown(train)
    assert "creator not recorded" in md and "https://example.org/w/9" in md


# --- prompts --------------------------------------------------------------------------------------------------------

GREEN = opt_outs_of(["Ann Green", "Zoë Müller", "Wu Li"], aliases={"Zoë Müller": ["@zmuller"]})


@pytest.mark.parametrize(
    "prompt",
    [
        "in the style of Green",
        "a garden by Green",
        "Green's spiral",
        "after Green",
        "like Green",
        "by Ann Green",
        "A. Green landscape",
        "ZoeMuller vibes",
        "zoemuller",
        "Z. Müller",
        "Z Muller",
        "a portrait by Zoe Muller",
        unicodedata.normalize("NFD", "Zoë Müller"),
        "Ｍｕｌｌｅｒ",
        "mullеr portrait",  # Cyrillic е
        "Z0E MU11ER",
        "by @zmuller",
        "by Li",
        "muller",
    ],
)
def test_prompts_that_name_an_opted_out_creator_are_refused(prompt):
    assert prompt_refusal(prompt, GREEN) is not None, prompt


@pytest.mark.parametrize(
    "prompt",
    [
        "a green spiral composition",
        "green and blue stripes",
        "a field of green",
        "a mullet haircut",
        "a li river landscape",
        "Zoe at the beach",
        "an ann arbor skyline",
        "the green green grass",
    ],
)
def test_innocent_prompts_are_generated(prompt):
    assert prompt_refusal(prompt, GREEN) is None, prompt


def test_generate_stage_skips_and_reports_refused_prompts_and_the_command_still_refuses():
    from stages.generate import PromptRefused, check_prompt, screen_prompts

    allowed, refused = screen_prompts(["a green spiral composition", "in the style of Green"], GREEN)
    assert allowed == ["a green spiral composition"]
    assert refused[0]["prompt"] == "in the style of Green" and "ann green" in refused[0]["reason"]
    with pytest.raises(PromptRefused, match="opted out"):
        check_prompt("in the style of Green", GREEN)


# --- rights statements ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(RIGHTS_STATEMENTS))
def test_every_rights_statement_is_recognised_by_url_and_name(code):
    spdx, name = RIGHTS_STATEMENTS[code][:2]
    for text in (
        f"http://rightsstatements.org/vocab/{code}/1.0/",
        f"https://rightsstatements.org/page/{code}/1.0/?language=en",
        name,
        code,
    ):
        got, terms, status = normalise(text)
        assert (got, status) == (spdx, "ok"), text
    assert normalise("No known copyright restrictions")[0] == "LicenseRef-RS-NKC"


@pytest.mark.parametrize(
    "raw,default,switched",
    [
        ("http://rightsstatements.org/vocab/NKC/1.0/", "rights_needs_policy:allow_no_known_copyright", "train"),
        ("No known copyright restrictions", "rights_needs_policy:allow_no_known_copyright", "train"),
        ("http://rightsstatements.org/vocab/NoC-US/1.0/", "rights_needs_policy:allow_no_copyright_us", "train"),
        ("http://rightsstatements.org/vocab/InC/1.0/", "license_forbids:training", "license_forbids:training"),
        ("In Copyright - Educational Use Permitted", "license_forbids:training", "license_forbids:training"),
        ("http://rightsstatements.org/vocab/InC-RUU/1.0/", "license_forbids:training", "license_forbids:training"),
        ("http://rightsstatements.org/vocab/UND/1.0/", "rights_undetermined", "rights_undetermined"),
        ("Copyright Not Evaluated", "rights_undetermined", "rights_undetermined"),
        (
            "http://rightsstatements.org/vocab/NoC-CR/1.0/",
            "rights_restricted:contractual",
            "rights_restricted:contractual",
        ),
        (
            "http://rightsstatements.org/vocab/NoC-OKLR/1.0/",
            "rights_restricted:other_legal",
            "rights_restricted:other_legal",
        ),
        (
            "http://rightsstatements.org/vocab/NoC-NC/1.0/",
            "license_forbids:non_commercial",
            "license_forbids:non_commercial",
        ),
    ],
)
def test_rights_statement_decisions(raw, default, switched):
    record = _rec(license_raw=raw)
    assert decide(record, POLICY, opt_outs_of())["reason"] == default
    chosen = POLICY.model_copy(update={"allow_no_known_copyright": True, "allow_no_copyright_us": True})
    assert decide(record, chosen, opt_outs_of())["reason"].split(":")[0] in ("allowed", *[switched.split(":")[0]])
    assert (decide(record, chosen, opt_outs_of())["decision"] == "train") == (switched == "train")


def test_a_rights_statement_url_that_disagrees_with_the_text_is_a_conflict():
    assert normalise("NKC", "http://rightsstatements.org/vocab/InC/1.0/")[2] == "conflict"
    assert normalise("No Known Copyright", "http://rightsstatements.org/vocab/NKC/1.0/")[2] == "ok"


# --- property: no variant of an opted-out creator reaches the training set -----------------------------------------

NAME_WORD = st.text(alphabet="abcdefghijklmnoprstuvwyzäöüéèçñøłß", min_size=2, max_size=9)
TRANSFORMS = {
    "nfd": lambda n, a: unicodedata.normalize("NFD", n),
    "nfc": lambda n, a: unicodedata.normalize("NFC", n),
    "full_width": lambda n, a: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in n),
    "upper": lambda n, a: n.upper(),
    "title": lambda n, a: n.title(),
    "punctuation": lambda n, a: "-".join(n.split()),
    "spacing": lambda n, a: "  " + "   ".join(n.split()) + " ",
    "underscore_dots": lambda n, a: "_".join(n.split()) + ".",
    "alias": lambda n, a: a,
    "handle": lambda n, a: "@" + "".join(a.split()),
}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(NAME_WORD, min_size=1, max_size=3).map(" ".join),
    st.lists(NAME_WORD, min_size=1, max_size=2).map(" ".join),
    st.lists(st.sampled_from(list(TRANSFORMS)), min_size=1, max_size=3),
    st.sampled_from(["CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0"]),
)
def test_no_variant_of_an_opted_out_creator_reaches_the_training_set(name, alias, transforms, license_raw):
    opt_outs = opt_outs_of([name], aliases={name: [alias, "@" + "".join(alias.split())]})
    rows = []
    for i, t in enumerate(transforms):
        rows.append(
            _rec(record_id=f"r{i}", source_uri=f"s/{i}", creator=TRANSFORMS[t](name, alias), license_raw=license_raw)
        )
    rows.append(_rec(record_id="other", source_uri="s/other", creator="Someone Else Entirely", license_raw="CC0-1.0"))
    train, excluded = license_records(pd.DataFrame(rows), POLICY, opt_outs)
    assert list(train["record_id"]) == ["other"], (name, alias, transforms, list(excluded["reason"]))
    assert set(excluded["reason"]) == {"opted_out:creator"}
