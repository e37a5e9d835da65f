"""The training set's card (Croissant 1.1 JSON-LD with the RAI vocabulary), its datasheet (Markdown, after Gebru et
al., "Datasheets for Datasets") and the model card (Hugging Face convention: YAML front matter, then Markdown).

Pure builders: they take recorded facts (the training table, the licence summary, params, registry tags, the
evaluation's headline figures) and return a dict or text. The card is a DVC output, so it is deterministic: no
clock, no absolute path, no host or user name, sorted keys; the same inputs give the same bytes (`card_text`).
The licence stage writes the dataset card and datasheet; registry/tracking.py logs them and the model card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import yaml

from atelier.config import CleanParams
from atelier.licenses import RIGHTS_STATEMENTS, usage_terms
from atelier.pii import parse_summary

DATASET_NAME = "atelier-licensed-train"
CROISSANT = "http://mlcommons.org/croissant/1.1"
CROISSANT_RAI = "http://mlcommons.org/croissant/RAI/1.0"
RECORD_SET = "records"
MODEL_TAGS = ["text-to-image", "latent-diffusion", "atelier"]

# the JSON-LD @context of Croissant 1.1 (as mlcroissant writes it), plus PROV-O
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "prov": "http://www.w3.org/ns/prov#",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# train.parquet's columns that the card's record set reads: column -> (Croissant data type, description)
FIELDS = {
    "record_id": ("sc:Text", "sha256 of the work's file bytes, as ingested"),
    "source": ("sc:Text", "name of the declared source the record came from (params.yaml ingest.sources)"),
    "title": ("sc:Text", "title of the work, as its source gives it"),
    "creator": ("sc:Text", "creator of the work, as its source gives it"),
    "credited": ("sc:Text", "every creator credited for the work and its duplicate copies, joined by '; '"),
    "caption": ("sc:Text", "the caption the model is trained on"),
    "license_spdx": ("sc:Text", "the work's licence as an SPDX expression (LicenseRef- for marks and statements)"),
    "license_url": ("sc:Text", "the licence URL the source gives"),
    "source_url": ("sc:Text", "where the work was published"),
    "requires_attribution": ("sc:Boolean", "the licence requires crediting the creator"),
    "share_alike": ("sc:Boolean", "the licence requires adaptations to be shared alike"),
    "permits_commercial": ("sc:Boolean", "the licence permits commercial use"),
    "width": ("sc:Integer", "width of the original image in pixels"),
    "height": ("sc:Integer", "height of the original image in pixels"),
    "phash": ("sc:Text", "64-bit perceptual hash (16 hex digits) of the original image"),
}
COLLECTION_TYPES = {
    "folder": "Manual Human Curator",
    "webdataset": "Secondary Data analysis",
    "parquet": "Secondary Data analysis",
    "urls": "Web Scraping",
}
COLLECTION_WORDS = {
    "folder": "a folder of image files with a metadata table, the imagefolder convention",
    "webdataset": "WebDataset tar shards (an existing image-text collection)",
    "parquet": "Parquet files in the Hugging Face datasets layout (an existing collection)",
    "urls": "a list of image URLs fetched politely, honouring robots.txt, TDM-Rep and noai signals",
}
_STATEMENT_URLS = {
    spdx: f"http://rightsstatements.org/vocab/{code}/1.0/" for code, (spdx, _, _, _) in RIGHTS_STATEMENTS.items()
}
_MARK_URLS = {"LicenseRef-PDM-1.0": "https://creativecommons.org/publicdomain/mark/1.0/"}


def license_url(spdx: str) -> str:
    """The URL of one licence id: the SPDX page, or the mark's or rights statement's own page for LicenseRef- ids."""
    if spdx in _MARK_URLS:
        return _MARK_URLS[spdx]
    if spdx in _STATEMENT_URLS:
        return _STATEMENT_URLS[spdx]
    if spdx.startswith("LicenseRef-"):
        raise ValueError(
            f"licence {spdx} has no public URL; add it to atelier/cards.py _MARK_URLS, or exclude it "
            "in the license stage"
        )
    return f"https://spdx.org/licenses/{spdx}.html"


def licence_ids(per_license: dict[str, int]) -> list[str]:
    """Every licence id in the training set's licence expressions (`A AND B` counts both), sorted."""
    return sorted({spdx for expression in per_license for spdx in expression.split(" AND ")})


def _counts(counts: dict[str, int]) -> str:
    return "; ".join(f"{key}: {n}" for key, n in sorted(counts.items())) or "none"


def _policy_words(policy: dict) -> str:
    return ", ".join(f"{key}={str(value).lower()}" for key, value in sorted(policy.items()))


def croissant_field(record_set: str, file_id: str, column: str, data_type: str, description: str) -> dict:
    """A Croissant field of `record_set`: `column` of the Parquet file `file_id`, with its data type and meaning."""
    return {
        "@type": "cr:Field",
        "@id": f"{record_set}/{column}",
        "name": column,
        "description": description,
        "dataType": data_type,
        "source": {"fileObject": {"@id": file_id}, "extract": {"column": column}},
    }


def privacy_counts(
    train: pd.DataFrame,
    rejects: pd.DataFrame | None = None,
    storage: tuple[int, int] | None = None,
    erased: int | None = None,
) -> dict:
    """What clean did for privacy, counted from the training records (train.parquet: faces, face_action, redacted)
    and, when given, clean's rejects (reason `faces`), the raw store's (encrypted, stored) record counts and the number
    of erased records: the same figures in the card and in `atelier audit --dataset`."""
    n = len(train)
    faces = train["faces"].fillna(0).astype(int) if "faces" in train else pd.Series([0] * n, dtype=int)
    action = train["face_action"] if "face_action" in train else pd.Series([None] * n, dtype=object)
    redacted = train["redacted"].fillna("") if "redacted" in train else pd.Series([""] * n, dtype=object)
    per_kind: dict[str, int] = {}
    per_field: dict[str, int] = {}
    for line in redacted:
        for name, kinds in parse_summary(line).items():
            per_field[name] = per_field.get(name, 0) + sum(kinds.values())
            for kind, k in kinds.items():
                per_kind[kind] = per_kind.get(kind, 0) + k
    counts = {
        "records_with_faces": int((faces > 0).sum()),
        "faces_detected": int(faces.sum()),
        "records_faces_blurred": int((action == "blurred").sum()),
        "faces_blurred": int(faces[action == "blurred"].sum()),
        "records_faces_kept_model_release": int((action == "kept_model_release").sum()),
        "records_faces_kept_historical": int((action == "kept_historical").sum()),
        "records_faces_kept_by_policy": int((action == "kept").sum()),
        "records_excluded_for_faces": (
            None if rejects is None or "reason" not in rejects else int((rejects["reason"] == "faces").sum())
        ),
        "records_redacted": int((redacted != "").sum()),
        "redactions_per_kind": dict(sorted(per_kind.items())),
        "redactions_per_field": dict(sorted(per_field.items())),
    }
    if storage is not None:
        counts |= {"raw_records_encrypted": storage[0], "raw_records_stored": storage[1]}
    if erased is not None:
        counts["records_erased"] = erased
    return counts


def _privacy_words(c: dict, clean: CleanParams) -> str:
    excluded = (
        "not counted here (see data/clean/rejects.parquet, reason faces)"
        if c["records_excluded_for_faces"] is None
        else str(c["records_excluded_for_faces"])
    )
    return (
        f"Faces: every image was searched for faces at clean time (dlib's frontal-face HOG detector, offline; small, "
        f"turned and distant faces can be missed: README 'Privacy'); policy clean.faces={clean.faces}. In the "
        f"training set {c['faces_detected']} faces were detected in {c['records_with_faces']} works: "
        f"{c['faces_blurred']} faces blurred in {c['records_faces_blurred']} training copies (the source files are "
        f"unchanged), {c['records_faces_kept_model_release']} works kept unblurred with a recorded model release or "
        f"consent, {c['records_faces_kept_historical']} as public-domain historical artworks, "
        f"{c['records_faces_kept_by_policy']} by policy; records excluded for showing faces: {excluded}. "
        f"Text: titles, captions and creator fields were scanned for e-mail addresses, phone numbers, street "
        f"addresses and postcodes, government ids (SSN, UK NI, IBAN) and URLs with personal query strings, each "
        f"replaced by a placeholder such as [email]: {c['records_redacted']} works redacted, per kind: "
        f"{_counts(c['redactions_per_kind'])}; per field: {_counts(c['redactions_per_field'])}. "
        "Creators' names are never redacted: they are published, per record and in ATTRIBUTION.md, because the "
        "licences require attribution (only contact details in a creator field are). Names of people in captions "
        "are not detected. "
        + (
            f"Storage: {c['raw_records_encrypted']} of {c['raw_records_stored']} original files are encrypted at rest "
            "(AES-256-GCM, key kept outside the repository). "
            if "raw_records_stored" in c
            else ""
        )
        + (
            f"Erasure: {c['records_erased']} records were erased on request (atelier forget) and are excluded from "
            "every later run. "
            if "records_erased" in c
            else ""
        )
    )


def dataset_card(
    train: pd.DataFrame,
    summary: dict,
    files: dict[str, str],
    sources: list[tuple[str, str]],
    clean: CleanParams,
    rejects: pd.DataFrame | None = None,
    storage: tuple[int, int] | None = None,
    erased: int | None = None,
) -> dict:
    """The Croissant 1.1 card of the training set: `train` (data/licensed/train.parquet), `summary` (its
    summary.json), `files` (file name beside the card -> sha256; train.parquet first), `sources` ((name, kind) of
    each declared source), the clean stage's params and, optionally, clean's rejects (for the records excluded for
    showing faces)."""
    missing = [c for c in FIELDS if c not in train.columns]
    if missing:
        raise ValueError(
            f"data/licensed/train.parquet lacks the columns {missing} that the dataset card reads; "
            "re-run the license stage (dvc repro license)"
        )
    if "train.parquet" not in files:
        raise ValueError("the dataset card needs train.parquet's sha256 among `files`")
    per_license, excluded = summary["train_per_license"], summary["excluded_per_reason"]
    per_source = dict(sorted(train["source"].value_counts().items())) if len(train) else {}
    kinds = sorted({kind for _, kind in sources})
    source_words = "; ".join(
        f"'{name}' ({kind}: {COLLECTION_WORDS.get(kind, kind)}), {per_source.get(name, 0)} records in the training set"
        for name, kind in sources
    )
    creators = int(train["creator"].replace("", pd.NA).dropna().nunique())
    opt_outs = summary["opt_outs_honoured"]
    preprocessing = [
        "ingest: each declared source is read into the raw store; a file over ingest.max_file_bytes or a metadata "
        "field over ingest.max_field_chars is refused, never cut; URL sources are fetched only where robots.txt, "
        "TDM-Rep and the noai signals allow.",
        f"clean: every image is decoded by an allow-listed Pillow decoder (PNG, JPEG, GIF, WEBP, BMP, TIFF), EXIF "
        f"orientation applied, converted to RGB, all metadata stripped, resized and centre-cropped to "
        f"{clean.resolution}x{clean.resolution} pixels; images under {clean.min_size} pixels on the shorter side, "
        f"over {clean.max_pixels} pixels (decompression bombs), empty or undecodable files are rejected; exact "
        f"duplicates (same bytes) and near duplicates (perceptual hash within {clean.near_duplicate_hamming} bits) "
        "are removed, keeping the first copy; faces are detected and, by clean.faces, blurred in the training copy "
        "or the record excluded; personal data in titles, captions and creator fields is replaced by placeholders.",
        f"license: each licence is normalised to SPDX (fail closed: a missing, unknown or conflicting licence is "
        f"excluded), the policy in force ({_policy_words(summary['policy'])}) and the opt-outs (policy/opt_out.csv "
        f"and each record's noai flag) are applied; a work trains only if every duplicate copy may. "
        f"{summary['excluded_records']} records excluded, per reason: {_counts(excluded)}; "
        f"{opt_outs} opt-outs honoured.",
    ]
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT, CROISSANT_RAI],
        "name": DATASET_NAME,
        "description": (
            f"The images and captions Atelier trains its text-to-image models on: {len(train)} works "
            f"by {creators} creators from the declared sources {', '.join(n for n, _ in sources)}, "
            f"each allowed for training by its licence and the licence policy in force. Licences per "
            f"record: {_counts(per_license)}. The record set gives each work's creator, licence and "
            "source; ATTRIBUTION.md lists the credits its licences require."
        ),
        "citeAs": (
            f"Atelier, {DATASET_NAME}: the licensed training set, train.parquet sha256 {files['train.parquet']}"
        ),
        "keywords": ["text-to-image", "images", "captions", "openly licensed", "provenance", "atelier"],
        "license": [license_url(spdx) for spdx in licence_ids(per_license)],
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": name,
                "name": name,
                "contentUrl": name,
                "sha256": digest,
                "encodingFormat": "application/x-parquet" if name.endswith(".parquet") else "text/markdown",
                "description": (
                    "the training records, one row per work"
                    if name == "train.parquet"
                    else "the credits the training works' licences require"
                    if name == "ATTRIBUTION.md"
                    else name
                ),
            }
            for name, digest in files.items()
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": RECORD_SET,
                "name": RECORD_SET,
                "description": "one record per training work: its creator, licence and source",
                "key": {"@id": f"{RECORD_SET}/record_id"},
                "field": [croissant_field(RECORD_SET, "train.parquet", column, *FIELDS[column]) for column in FIELDS],
            }
        ],
        "prov:wasDerivedFrom": [
            {
                "@type": "prov:Entity",
                "name": name,
                "description": f"the declared source '{name}' (kind {kind}, params.yaml "
                f"ingest.sources); {per_source.get(name, 0)} records in the "
                "training set",
            }
            for name, kind in sources
        ],
        "prov:wasGeneratedBy": {
            "@type": "prov:Activity",
            "name": "license stage (stages/license.py)",
            "description": (
                f"licence normalisation, policy and opt-outs applied to the clean records; policy in "
                f"force: {_policy_words(summary['policy'])}"
            ),
            "additionalProperty": (
                [
                    {"@type": "sc:PropertyValue", "name": f"policy.{k}", "value": v}
                    for k, v in sorted(summary["policy"].items())
                ]
                + [
                    {"@type": "sc:PropertyValue", "name": f"excluded.{reason}", "value": n}
                    for reason, n in sorted(excluded.items())
                ]
                + [
                    {"@type": "sc:PropertyValue", "name": "excluded_records", "value": summary["excluded_records"]},
                    {"@type": "sc:PropertyValue", "name": "opt_outs_honoured", "value": opt_outs},
                    {"@type": "sc:PropertyValue", "name": "train_records", "value": len(train)},
                ]
            ),
        },
        "prov:wasAttributedTo": {
            "@type": "prov:SoftwareAgent",
            "name": "Atelier",
            "description": "compiled by the Atelier pipeline; each work is credited to its "
            "creator in the record set and in ATTRIBUTION.md",
        },
        "rai:dataCollection": (
            f"Works gathered from the operator's declared sources: {source_words}. Each record "
            "keeps its source's title, creator, caption, licence and source URL."
        ),
        "rai:dataCollectionType": sorted({COLLECTION_TYPES.get(kind, "Others") for kind in kinds}),
        "rai:dataPreprocessingProtocol": preprocessing,
        "rai:personalSensitiveInformation": (
            _privacy_words(privacy_counts(train, rejects, storage, erased), clean)
            + "Opted-out creators are excluded from training; their names stay only in the operator's "
            "private records (excluded.parquet, policy/opt_out.csv), not in this card."
        ),
        "rai:dataBiases": (
            f"The set holds only openly licensed works from the declared sources ({', '.join(kinds)}); it "
            "over-represents what those sources and licences favour (styles, subjects and creators who publish "
            "under open licences) and under-represents everything else. Captions come from the sources as given."
        ),
        "rai:dataLimitations": (
            f"Small and narrow: {len(train)} works at {clean.resolution}x{clean.resolution} pixels. Licences and "
            "creators are as the sources state them: a wrong licence or creator in a source is carried over. "
            "Duplicates are found by exact bytes and perceptual hash only."
        ),
        "rai:dataUseCases": (
            "Training and evaluating Atelier's text-to-image models, whose artworks carry signed provenance and the "
            "usage terms of these licences. Not for identifying people, nor for imitating one named creator."
        ),
        "rai:dataSocialImpact": (
            "Generated images may resemble the training works; Atelier checks each artwork for replication of a "
            "training image, credits the creators whose licences require it and honours opt-outs at every run."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Rebuilt by the pipeline (DVC) whenever a source, the policy or the opt-out list changes; an opt-out or "
            "takedown removes the work from the next training set. The card's sha256 names this exact version."
        ),
    }


def card_text(card: dict) -> str:
    """The card as written to disk: JSON, sorted keys, two-space indent, UTF-8, final newline (so byte-stable)."""
    return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def card_sha256(path: Path) -> str:
    """sha256 of a card file's bytes: the dataset card's digest, part of the data's lineage."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def datasheet_markdown(card: dict, summary: dict) -> str:
    """DATASHEET.md: the dataset card in words, in the sections of Gebru et al.'s Datasheets for Datasets."""
    per_license = summary["train_per_license"]
    files = "\n".join(f"- `{d['name']}`: {d['description']} (sha256 `{d['sha256']}`)" for d in card["distribution"])
    licences = "\n".join(f"| {spdx} | {n} |" for spdx, n in sorted(per_license.items()))
    excluded = "\n".join(f"| {reason} | {n} |" for reason, n in sorted(summary["excluded_per_reason"].items()))
    sources = "\n".join(f"- {s['name']}: {s['description']}" for s in card["prov:wasDerivedFrom"])
    fields = "\n".join(
        f"  - `{f['name']}` ({f['dataType'].removeprefix('sc:')}): {f['description']}"
        for f in card["recordSet"][0]["field"]
    )
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(card["rai:dataPreprocessingProtocol"], 1))
    return "\n".join(
        [
            f"# Datasheet: {card['name']}",
            "",
            "Machine-readable card: `croissant.json` (Croissant 1.1 with the RAI vocabulary).",
            "",
            "## Motivation",
            "",
            "Atelier trains its text-to-image models only on works whose licences allow it, and publishes what it "
            "trained on so that anyone can check. This set is that training data.",
            "",
            "## Composition",
            "",
            card["description"],
            "",
            f"- Records: {summary['train_records']}; credit required for {summary['attribution_required']} works by "
            f"{summary['attribution_creators']} creators; share-alike: {summary['share_alike']}; non-commercial: "
            f"{summary['non_commercial']}.",
            "- Each record's fields:",
            fields,
            "",
            "| licence | records |",
            "|---|---|",
            licences,
            "",
            "## Collection process",
            "",
            card["rai:dataCollection"],
            "",
            "Declared sources:",
            sources,
            "",
            "## Preprocessing, cleaning and filtering",
            "",
            steps,
            "",
            "| excluded because | records |",
            "|---|---|",
            excluded or "| none | 0 |",
            "",
            f"Opt-outs honoured: {summary['opt_outs_honoured']}. Excluded records: {summary['excluded_records']}.",
            "",
            "## Personal and sensitive information",
            "",
            card["rai:personalSensitiveInformation"],
            "",
            "## Uses",
            "",
            card["rai:dataUseCases"],
            "",
            "Known biases. " + card["rai:dataBiases"],
            "",
            "Limitations. " + card["rai:dataLimitations"],
            "",
            "Social impact. " + card["rai:dataSocialImpact"],
            "",
            "## Distribution",
            "",
            "Licences: " + ", ".join(card["license"]) + ".",
            "",
            files,
            "",
            "## Maintenance",
            "",
            card["rai:dataReleaseMaintenancePlan"],
            "",
        ]
    )


# --- the model card ---------------------------------------------------------------------------------------------


def hf_license(per_license: dict[str, int]) -> dict:
    """The model card's licence keys, Hugging Face style: one SPDX id in lower case when the training data has one
    licence, else `other` with a name and a link to the attribution list."""
    ids = licence_ids(per_license)
    if len(ids) == 1 and not ids[0].startswith("LicenseRef-"):
        return {"license": ids[0].lower()}
    return {"license": "other", "license_name": "atelier-training-data-licences", "license_link": "ATTRIBUTION.md"}


def _figure(value) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


EVALUATION_ROWS = [  # figure, generated, real images, chance or baseline (keys of eval.json's headline)
    ("prompt retrieval top-1", "retrieval_top1", "real_retrieval_top1", "chance_top1"),
    ("prompt retrieval top-5", "retrieval_top5", "real_retrieval_top5", "chance_top5"),
    ("CLIPScore (0-2.5)", "clip_score", "real_clip_score", None),
    ("CMMD (lower is closer)", "cmmd", None, "cmmd_baseline"),
    ("diversity", "diversity", "real_diversity", None),
    ("replication rate", "replication_rate", None, None),
    ("style accuracy (demo)", "style_accuracy", "real_style_accuracy", None),
    ("palette accuracy (demo)", "palette_accuracy", "real_palette_accuracy", None),
]


def _evaluation(headline: dict | None) -> list[str]:
    if not headline:
        return [
            "Not evaluated yet: the evaluate stage adds the figures, beside the held-out real images' and "
            "chance, when it runs.",
            "",
        ]
    rows = [
        f"| {label} | {_figure(headline.get(g))} | {_figure(headline.get(r)) if r else '-'} | "
        f"{_figure(headline.get(c)) if c else '-'} |"
        for label, g, r, c in EVALUATION_ROWS
        if headline.get(g) is not None
    ]
    chance_note = "chance for retrieval, the real-vs-real baseline for CMMD"
    return [
        f"Generations at guidance {headline.get('guidance', 'n/a')} on held-out prompts, scored by the evaluator "
        "CLIP (trained apart from the generator's text encoder), beside the held-out real images with their own "
        f"captions and {chance_note} (reports/eval.json).",
        "",
        "| figure | generated | real images | chance / baseline |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Figures where the generations beat the real images (read with caution): "
        f"{int(headline.get('figures_beating_real', 0))}.",
        "",
    ]


def _components(parts: list[dict] | None, reason: str | None) -> list[str]:
    """The model card's section on the model's parts (atelier/components.py) and the licensed-only verdict."""
    if parts is None:
        return ["Not recorded: this version was registered before its parts were (re-run train_diffusion).", ""]
    rows = [
        f"| {p['name']} | {p['role']} | {'here, on the training data below' if p['trained_here'] else 'outside'}"
        f" | `{p['weights_sha256'] or 'in the registered weights'}` | {p['license'] or 'the training data terms'} "
        f"| {p['training_data']} | {_licensed_words(p['training_data_licensed'])} |"
        for p in parts
    ]
    verdict = all(p["trained_here"] or p["training_data_licensed"] is True for p in parts)
    return [
        f"Licensed only: **{'yes' if verdict else 'no'}**. {reason or ''}".rstrip(),
        "",
        "| part | role | trained | weights sha256 | licence | training data | licensed training data |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _licensed_words(value: bool | None) -> str:
    return {True: "yes", False: "no"}.get(value, "unknown")


def model_card(
    model: dict,
    dataset: dict,
    evaluation: dict | None = None,
    components: list[dict] | None = None,
    licensed_only_reason: str | None = None,
) -> str:
    """MODEL_CARD.md of one registered version. `model`: name, version, run_id, weights_sha256, backend,
    resolution, git_commit; `dataset`: name, card_sha256, dvc_md5, records, per_license (licence -> records);
    `evaluation`: eval.json's headline figures, or None before the evaluate stage; `components`: the model's parts
    (atelier/components.py; None when the version predates them) with the licensed-only verdict's reason."""
    per_license = dataset["per_license"]
    outside = [p for p in components or [] if not p["trained_here"]]
    base = next((p for p in outside if p["role"] == "base_model"), None)
    front = {
        **hf_license(per_license),
        "datasets": [dataset["name"]],
        "dataset_card_sha256": dataset["card_sha256"],
        "tags": MODEL_TAGS,
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        **({"base_model": base["name"]} if base else {}),
    }
    if outside:
        made = (
            "Built on parts made elsewhere ("
            + ", ".join(f"{p['role']} {p['name']}" for p in outside)
            + "), declared with their licence and training data under Components; the other parts are trained "
            "by Atelier on the training data below."
        )
    else:
        made = (
            "Base model: none. The autoencoder, the CLIP text encoder and the UNet are all trained from scratch "
            "on the training data below."
        )
    terms = usage_terms(per_license)
    licences = "\n".join(f"| {spdx} | {n} |" for spdx, n in sorted(per_license.items()))
    return "\n".join(
        [
            "---",
            yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"),
            "---",
            "",
            f"# {model['name']} version {model['version']}",
            "",
            (
                "A text-to-image model trained by Atelier on openly licensed works, on top of parts made elsewhere "
                "(see Components); "
                if outside
                else "A small text-to-image latent diffusion model trained from scratch by "
                "Atelier on openly licensed works only; "
            )
            + "each artwork it makes is signed with its provenance.",
            "",
            "## Model details",
            "",
            f"- Name and version: {model['name']} {model['version']} (MLflow run `{model['run_id']}`)",
            f"- Weights sha256: `{model['weights_sha256']}`",
            f"- Backend: {model['backend']}; resolution {model['resolution']}x{model['resolution']} pixels",
            f"- {made}",
            f"- Code version: `{model.get('git_commit', 'unknown')}`",
            "",
            "## Components",
            "",
            *_components(components, licensed_only_reason),
            "## Training data",
            "",
            f"- Dataset: {dataset['name']}, {dataset['records']} records (Croissant card `cards/croissant.json`, "
            f"datasheet `cards/DATASHEET.md`)",
            f"- Dataset card sha256: `{dataset['card_sha256']}`",
            f"- DVC md5 of data/licensed/train.parquet: `{dataset['dvc_md5']}`",
            "",
            "| licence | records |",
            "|---|---|",
            licences,
            "",
            "## Evaluation",
            "",
            *_evaluation(evaluation),
            "## Intended use",
            "",
            "Making abstract artworks from short text prompts in the style of the training collection, each published "
            "with a signed provenance manifest, an AI disclosure and the usage terms below. Not for depicting real "
            "people, imitating one named creator, or images presented as photographs or as human-made.",
            "",
            "## Limitations",
            "",
            f"- Small and narrow: trained at {model['resolution']} pixels on {dataset['records']} works; prompts far "
            "from the training captions give poor images.",
            (
                "- The evaluation's judge is the pretrained CLIP that is also the text encoder, so it is not "
                "independent of what it judges; "
                if any(p["role"] == "clip" for p in outside)
                else "- The evaluation's judge is a CLIP trained on the same collection, not an independent model; "
            )
            + "the figures compare this model with the collection's own held-out images, not with other models.",
            "- The replication check (embedding distance and perceptual hash against the training images) is a "
            "heuristic; artworks it flags are quarantined, but it can miss a close copy.",
            "- Faces in the training images are found by a frontal-face detector and blurred (or the work excluded) by "
            "policy; small, turned and distant faces can be missed (the dataset card counts what was done).",
            "",
            "## Licences and obligations",
            "",
            terms["statement"],
            "",
            "The credits the licences require are in the attribution list (`ATTRIBUTION.md`, logged with this run).",
            "",
        ]
    )


def model_card_front_matter(text: str) -> dict:
    """The YAML front matter of a model card as a dict; ValueError when the text does not open with one."""
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError("the model card does not open with YAML front matter between '---' lines")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])
