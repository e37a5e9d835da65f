"""The audit report to hand on: plain text and a self-contained HTML page from `atelier audit`'s results.

The page opens with a summary (how many artworks verified, recovered, failed; the date; the tool version; the trust
anchor used), then one card per artwork: a thumbnail, the status, each check, the credits, the usage terms, the AI
disclosure and the EU AI Act Article 50(2) checklist. Every value is escaped, the page runs no script and loads
nothing: its Content-Security-Policy allows only inline styles and `data:` images (the thumbnails).

`results` are app/audit.py's dicts ({path, status, summary, checks, notes, manifest, attribution, marking});
`meta` is {"date", "tool", "anchor", "mode"}. Optional keys may be missing: a fact that is absent is shown as
"not checked", never as met.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

# the verdicts of app/audit.py (VERDICTS), in the order the summary shows them, with their legend
STATUSES = ("verified", "recovered", "not_atelier", "failed", "tampered")
LABELS = {"not_atelier": "not Atelier"}
LEGEND = {
    "verified": "every check passed under the trust anchor",
    "recovered": "no content credentials; its provenance was found by watermark or perceptual hash, which is not a "
    "verification (the checks say whether the pixels are still the recorded artwork's)",
    "not_atelier": "no content credentials and no match in the log: nothing says Atelier made it (a person's "
    "photograph, another tool's picture); the AI-marking checklist does not apply",
    "failed": "the file holds, but a record it names does not (registry, DVC, licence policy), or it cannot be read",
    "tampered": "the content credentials or the pixels do not hold: the file was changed or re-signed after signing",
}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
THUMBNAIL_PX = 128
MET, PARTIAL, MISSING, NOT_CHECKED = "met", "partly met", "missing", "not checked"
MARKS = {MET: "✓", PARTIAL: "◐", MISSING: "✗", NOT_CHECKED: "–"}
AI_SOURCE_TYPE = "trainedAlgorithmicMedia"


# --- the EU AI Act Article 50(2) checklist ------------------------------------------------------------------------


def _point(point: str, state: str, detail: str) -> dict:
    ok = {MET: True, MISSING: False}.get(state)  # partly met and not checked are both None; `state` tells them apart
    return {"point": point, "ok": ok, "state": state, "detail": detail}


def eu_checklist(result: dict) -> list[dict]:
    """The points of EU AI Act Art. 50(2) and its Code of Practice on marking, for one audit result: each
    {point, ok (True met, False missing, None partly met or not checked), state, detail}."""
    marking = result.get("marking") or {}
    manifest = result.get("manifest") or {}
    points = []

    state = marking.get("c2pa_state", "absent")
    a = "(a) signed machine-readable metadata"
    if state == "absent":
        points.append(_point(a, NOT_CHECKED, "the audit did not report the C2PA state"))
    elif state == "Trusted":
        points.append(_point(a, MET, "C2PA manifest present, signature valid and trusted against the anchor"))
    elif state == "Valid":
        points.append(
            _point(
                a,
                PARTIAL,
                "C2PA manifest present and its signature valid, but the signer is not trusted against the anchor used",
            )
        )
    elif state == "Invalid":
        points.append(_point(a, MISSING, "C2PA manifest present but invalid (signature or hash binding broken)"))
    else:
        points.append(_point(a, MISSING, "no C2PA manifest in the file (stripped or re-encoded)"))

    b = "(b) time of signing"
    signed_at = marking.get("signed_at")
    if "signed_at" not in marking:
        points.append(_point(b, NOT_CHECKED, "the audit did not report the claim's signing time"))
    elif state in (None, "Invalid"):
        points.append(_point(b, MISSING, "no valid signed claim, so no time of signing can be relied on"))
    elif not signed_at:
        points.append(_point(b, MISSING, "the signed claim carries no time of signing"))
    elif marking.get("trusted_timestamp") is True:
        points.append(_point(b, MET, f"signed at {signed_at}, attested by a timestamp authority"))
    elif "trusted_timestamp" not in marking:
        points.append(
            _point(
                b,
                PARTIAL,
                f"the claim says signed at {signed_at}; whether a timestamp authority attested it was not checked",
            )
        )
    else:
        points.append(
            _point(
                b,
                PARTIAL,
                f"the claim says signed at {signed_at} (the signer's own clock); no trusted "
                "timestamp from a timestamp authority",
            )
        )

    c = "(c) imperceptible mark present and readable"
    mark = marking.get("watermark")
    if not isinstance(mark, dict):
        points.append(_point(c, NOT_CHECKED, "the audit did not report the watermark"))
    else:
        expected = mark.get("expected")
        if expected is None:
            expected = ((manifest.get("artwork") or {}).get("watermark") or {}).get("id")
        read, readable, distance = mark.get("read"), mark.get("readable"), mark.get("distance")
        bits = f" ({distance} bits off)" if distance is not None else ""
        if readable is None and read is not None and expected is not None:
            readable = read == expected  # the audit left the comparison to us
        if readable is True:
            points.append(_point(c, MET, f"watermark read{bits}: the manifest's id {expected}"))
        elif readable is False:
            points.append(
                _point(
                    c,
                    MISSING,
                    "no watermark could be read from the pixels"
                    if read is None
                    else f"watermark read as {read}{bits}, not the manifest's id {expected}",
                )
            )
        elif read is not None:
            points.append(
                _point(c, PARTIAL, f"watermark id {read} read, but no manifest names the id to compare it with")
            )
        else:
            points.append(
                _point(
                    c, NOT_CHECKED, "the watermark was not decoded (the image is too small, or the audit did not try)"
                )
            )

    d = "(d) AI disclosure"
    disclosed = marking.get("ai_disclosure")
    if disclosed is None:
        points.append(_point(d, NOT_CHECKED, "the audit did not report the digital source type"))
    elif disclosed:
        points.append(
            _point(
                d,
                MET,
                f"digital source type {AI_SOURCE_TYPE} declared in the signed c2pa.actions and the manifest's rights",
            )
        )
    else:
        points.append(_point(d, MISSING, f"the credentials do not declare the digital source type {AI_SOURCE_TYPE}"))

    e = "(e) detectable by the public: logged in the signed public log"
    logged = marking.get("logged")
    if logged is None:
        points.append(_point(e, NOT_CHECKED, "the audit did not look the artwork up in a published, signed log"))
    elif logged:
        points.append(_point(e, MET, "the artwork's entry is in the published, signed log"))
    else:
        points.append(_point(e, MISSING, "no entry for the artwork in the published, signed log"))
    return points


def checklist_summary(points: list[dict]) -> str:
    """One line: how many points are met, and which are partly met, missing or not checked."""
    by_state = {s: [p["point"] for p in points if p["state"] == s] for s in (PARTIAL, MISSING, NOT_CHECKED)}
    met = sum(p["state"] == MET for p in points)
    parts = [f"{met} of {len(points)} met"] + [f"{s}: {', '.join(names)}" for s, names in by_state.items() if names]
    return "; ".join(parts)


# --- facts pulled out of a result -----------------------------------------------------------------------------------


def label(status: object) -> str:
    return LABELS.get(str(status), str(status))


def counts(results: list[dict]) -> dict[str, int]:
    """How many results have each verdict (an unknown one counts as failed)."""
    out = dict.fromkeys(STATUSES, 0)
    for r in results:
        out[r.get("status") if r.get("status") in STATUSES else "failed"] += 1
    return out


def _credits(result: dict) -> str:
    attribution = ((result.get("manifest") or {}).get("data") or {}).get("attribution") or {}
    creators, works = attribution.get("creators"), attribution.get("works")
    if isinstance(creators, list):
        creators = ", ".join(map(str, creators)) or "none"
    if creators is None and works is None:
        return "not recorded in the manifest"
    listed = f"; list: {attribution['file']}" if attribution.get("file") else ""
    return (
        f"creators: {creators if creators is not None else 'not recorded'}; works: "
        f"{works if works is not None else 'not recorded'}{listed}"
    )


def _rights(result: dict) -> dict:
    return (result.get("manifest") or {}).get("rights") or {}


def _usage_terms(result: dict) -> str:
    return (_rights(result).get("usage_terms") or {}).get("statement") or "not recorded in the manifest"


def _disclosure(result: dict) -> tuple[str, str]:
    rights = _rights(result)
    return (
        rights.get("disclosure") or "not recorded in the manifest",
        rights.get("digital_source_type") or "not recorded in the manifest",
    )


def _generator(result: dict) -> dict:
    manifest = result.get("manifest") or {}
    model = manifest.get("model") or {}
    artwork = manifest.get("artwork") or {}
    facts = {
        "artwork id": manifest.get("id"),
        "prompt": (artwork.get("generator") or {}).get("prompt"),
        "model": f"{model['name']} v{model.get('version', '?')}" if model.get("name") else None,
        "created": artwork.get("created_at"),
    }
    return {k: v for k, v in facts.items() if v is not None}


def thumbnail_data_uri(path: Path | str, size: int = THUMBNAIL_PX) -> str | None:
    """A PNG thumbnail (at most `size` px a side) of the image at `path` as a data: URI, or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((size, size))
            thumb = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- plain text -----------------------------------------------------------------------------------------------------


def _meta_lines(meta: dict) -> list[str]:
    return [
        f"{label}: {meta.get(key) or 'not stated'}"
        for key, label in (("date", "date"), ("tool", "tool"), ("mode", "mode"), ("anchor", "trust anchor"))
    ]


def format_text(results: list[dict], meta: dict) -> str:
    """The report as plain text: the summary, then each artwork with its checks, rights and checklist."""
    n = counts(results)
    lines = [
        "Atelier provenance audit",
        *_meta_lines(meta),
        f"artworks: {len(results)} ({', '.join(f'{label(s)} {n[s]}' for s in STATUSES)})",
    ]
    for r in results:
        lines += ["", f"{r.get('path')}: {label(r.get('status')).upper()} - {r.get('summary', '')}"]
        lines += [
            f"  [{'ok' if c.get('ok') else 'FAIL'}] {c.get('name')}: {c.get('detail')}" for c in r.get("checks") or []
        ]
        lines += [f"  note: {note}" for note in r.get("notes") or []]
        disclosure, source_type = _disclosure(r)
        lines += (
            [
                f"  credits: {_credits(r)}",
                f"  usage terms: {_usage_terms(r)}",
                f"  AI disclosure: {disclosure} (digital source type: {source_type})",
            ]
            if r.get("manifest")
            else ["  no manifest found or recovered: credits, usage terms and AI disclosure unknown"]
        )
        if r.get("status") == "not_atelier":
            lines.append("  EU AI Act Art. 50(2): not applicable (nothing says this is an AI-generated artwork)")
            continue
        points = eu_checklist(r)
        lines.append(f"  EU AI Act Art. 50(2): {checklist_summary(points)}")
        lines += [f"    [{p['state']}] {p['point']}: {p['detail']}" for p in points]
    lines += ["", "verdicts:"] + [f"  {label(v)}: {meaning}" for v, meaning in LEGEND.items()]
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#eef0f3;color:#1d2330;font:15px/1.5 "Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:2.5rem 2rem 4rem}
h1{font-size:1.9rem;margin:0 0 .2rem;letter-spacing:-.01em}
h2{font-size:1.15rem;margin:0 0 .3rem;word-break:break-all}
h3{font-size:.78rem;text-transform:uppercase;letter-spacing:.06em;color:#5b6475;margin:1.3rem 0 .4rem}
.lead{color:#5b6475;margin:0 0 1.5rem}
.sheet,.card{background:#fff;border:1px solid #d9dde4;border-radius:10px;padding:1.4rem 1.6rem;margin:0 0 1.3rem}
.tiles{display:flex;gap:1rem;margin:0 0 1.2rem}
.tile{flex:1;border-radius:8px;padding:.8rem 1rem;background:#f7f8fa;border-left:5px solid #98a2b3}
.tile b{display:block;font-size:1.9rem;line-height:1.1}
.tile.verified{border-color:#1e7b45}.tile.recovered{border-color:#b86e00}.tile.failed{border-color:#b42318}
.tile.tampered{border-color:#7a1010}.tile.not_atelier{border-color:#667085}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;vertical-align:top;padding:.38rem .6rem;border-bottom:1px solid #e6e9ee}
th{font-weight:600;color:#3d4555}
.meta th{width:9rem;white-space:nowrap}
.mono,.meta td.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.84rem;word-break:break-all}
.head{display:flex;gap:1.4rem;align-items:flex-start}
.thumb{width:128px;height:128px;flex:none;border:1px solid #d9dde4;border-radius:6px;object-fit:contain;
background:#f7f8fa;display:flex;align-items:center;justify-content:center;color:#98a2b3;font-size:.8rem}
.badge{display:inline-block;padding:.05rem .65rem;border-radius:99px;font-size:.75rem;font-weight:700;
text-transform:uppercase;letter-spacing:.05em;color:#fff;background:#667085}
.badge.verified{background:#1e7b45}.badge.recovered{background:#b86e00}.badge.failed{background:#b42318}
.badge.tampered{background:#7a1010}.badge.not_atelier{background:#667085}
.card.verified{border-top:5px solid #1e7b45}.card.recovered{border-top:5px solid #b86e00}
.card.failed{border-top:5px solid #b42318}.card.tampered{border-top:5px solid #7a1010}
.card.not_atelier{border-top:5px solid #667085}
dl.legend{display:grid;grid-template-columns:8rem 1fr;gap:.3rem .8rem;margin:0}
.summary{margin:.4rem 0 0}
table.checks td:nth-child(2),table.checklist td:nth-child(2){width:17rem}
table.checklist td:nth-child(3){white-space:nowrap}
table.index td:nth-child(2){white-space:nowrap}table.index td:nth-child(3){width:7rem}
.marks span{display:inline-block;width:1.1rem;text-align:center;font-weight:700}
td.mark{width:2rem;font-size:1.05rem;font-weight:700;text-align:center}
.ok{color:#1e7b45}.fail{color:#b42318}.partial{color:#b86e00}.unchecked{color:#667085}
dl{display:grid;grid-template-columns:10rem 1fr;gap:.3rem 1rem;margin:0}
dt{font-weight:600;color:#3d4555}dd{margin:0}
ul.notes{margin:.2rem 0;padding-left:1.2rem;color:#3d4555}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;border:1px solid #e6e9ee;border-radius:6px;
padding:.6rem .8rem;font-size:.8rem;max-height:18rem;overflow:auto}
.verdict{margin:.5rem 0 0;font-weight:600}
footer{color:#5b6475;font-size:.85rem}
a{color:#1d4ed8}
@media print{body{background:#fff}main{padding:0}.card,.sheet{break-inside:avoid;border-color:#bbb}pre{max-height:none}}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n"
    )


def _meta_table(meta: dict, more_rows: str = "") -> str:
    rows = [
        ("Date (UTC)", meta.get("date"), ""),
        ("Tool", meta.get("tool"), ""),
        ("Mode", meta.get("mode"), ""),
        ("Trust anchor", meta.get("anchor"), "mono"),
    ]
    return (
        '<table class="meta">'
        + "".join(
            f'<tr><th>{label}</th><td class="{cls}">{escape(str(value or "not stated"))}</td></tr>'
            for label, value, cls in rows
        )
        + more_rows
        + "</table>"
    )


def _status_class(status: object) -> str:
    return status if status in STATUSES else "failed"


def _checks_table(checks: list[dict]) -> str:
    if not checks:
        return '<p class="unchecked">No checks were reported.</p>'
    rows = "".join(
        f'<tr><td class="mark {"ok" if c.get("ok") else "fail"}">{"✓" if c.get("ok") else "✗"}</td>'
        f"<td>{escape(str(c.get('name', '')))}</td><td>{escape(str(c.get('detail', '')))}</td></tr>"
        for c in checks
    )
    return f'<table class="checks"><tr><th></th><th>Check</th><th>Detail</th></tr>{rows}</table>'


def _checklist_table(points: list[dict]) -> str:
    css = {MET: "ok", PARTIAL: "partial", MISSING: "fail", NOT_CHECKED: "unchecked"}
    rows = "".join(
        f'<tr><td class="mark {css[p["state"]]}">{MARKS[p["state"]]}</td><td>{escape(p["point"])}</td>'
        f'<td class="{css[p["state"]]}">{escape(p["state"])}</td><td>{escape(p["detail"])}</td></tr>'
        for p in points
    )
    return (
        f'<table class="checklist"><tr><th></th><th>Point</th><th>State</th><th>Detail</th></tr>{rows}</table>'
        f'<p class="verdict">{escape(checklist_summary(points))}</p>'
    )


def _checklist_marks(points: list[dict]) -> str:
    css = {MET: "ok", PARTIAL: "partial", MISSING: "fail", NOT_CHECKED: "unchecked"}
    return (
        '<span class="marks">'
        + "".join(
            f'<span class="{css[p["state"]]}" title="{escape(p["point"])}: {p["state"]}">{MARKS[p["state"]]}</span>'
            for p in points
        )
        + "</span>"
    )


def _card(n: int, r: dict) -> str:
    status = _status_class(r.get("status"))
    uri = thumbnail_data_uri(r["path"]) if r.get("path") else None
    thumb = f'<img class="thumb" src="{uri}" alt="thumbnail">' if uri else '<div class="thumb">no preview</div>'
    facts = "".join(f"<dt>{escape(k.capitalize())}</dt><dd>{escape(str(v))}</dd>" for k, v in _generator(r).items())
    notes = "".join(f"<li>{escape(str(note))}</li>" for note in r.get("notes") or [])
    disclosure, source_type = _disclosure(r)
    attribution = r.get("attribution")
    return (
        f'<section class="card {status}" id="artwork-{n}"><div class="head">{thumb}<div>'
        f"<h2>{escape(str(r.get('path', '(no path)')))}</h2>"
        f'<span class="badge {status}">{escape(label(r.get("status", "unknown")))}</span>'
        f'<p class="summary">{escape(str(r.get("summary", "")))}</p></div></div>'
        + (f"<h3>Artwork</h3><dl>{facts}</dl>" if facts else "")
        + f"<h3>Checks</h3>{_checks_table(r.get('checks') or [])}"
        + (f'<h3>Notes</h3><ul class="notes">{notes}</ul>' if notes else "")
        + "<h3>Credits, terms and disclosure</h3>"
        + (
            '<p class="unchecked">No manifest was found or recovered: the credits, usage terms and AI '
            "disclosure are unknown.</p>"
            if not r.get("manifest")
            else f"<dl><dt>Credits</dt><dd>{escape(_credits(r))}</dd>"
            f"<dt>Usage terms</dt><dd>{escape(_usage_terms(r))}</dd>"
            f"<dt>AI disclosure</dt><dd>{escape(disclosure)}</dd>"
            f'<dt>Source type</dt><dd class="mono">{escape(source_type)}</dd></dl>'
        )
        + (f"<h3>Attribution list</h3><pre>{escape(str(attribution))}</pre>" if attribution else "")
        + (
            '<h3>EU AI Act Article 50(2): marking</h3><p class="unchecked">Not applicable: nothing says this is an '
            "AI-generated artwork.</p></section>"
            if r.get("status") == "not_atelier"
            else f"<h3>EU AI Act Article 50(2): marking</h3>{_checklist_table(eu_checklist(r))}</section>"
        )
    )


def format_html(results: list[dict], meta: dict) -> str:
    """The report as one self-contained HTML page (summary, then a card per artwork); every value escaped."""
    n = counts(results)
    tiles = "".join(f'<div class="tile {s}"><b>{n[s]}</b>{escape(label(s))}</div>' for s in STATUSES)
    index = "".join(
        f'<tr><td>{i}</td><td class="mono"><a href="#artwork-{i}">'
        f"{escape(Path(str(r.get('path', ''))).name)}</a></td>"
        f'<td class="mono artwork-id">{escape(str((r.get("manifest") or {}).get("id") or "–"))}</td>'
        f'<td><span class="badge {_status_class(r.get("status"))}">'
        f"{escape(label(r.get('status', 'unknown')))}</span></td>"
        f"<td>{'' if r.get('status') == 'not_atelier' else _checklist_marks(eu_checklist(r))}</td>"
        f"<td>{escape(str(r.get('summary', '')))}</td></tr>"
        for i, r in enumerate(results, start=1)
    )
    legend = "".join(
        f'<dt><span class="badge {v}">{escape(label(v))}</span></dt><dd>{escape(m)}</dd>' for v, m in LEGEND.items()
    )
    body = (
        "<h1>Atelier provenance audit</h1>"
        f'<p class="lead">{len(results)} artwork{"s" if len(results) != 1 else ""} audited: content '
        "credentials, watermark, ledger and lineage.</p>"
        f'<section class="sheet"><h3 style="margin-top:0">Summary</h3><div class="tiles">{tiles}</div>'
        f"{_meta_table(meta)}"
        f'<h3>Verdicts</h3><dl class="legend">{legend}</dl>'
        + (
            f'<h3>Artworks</h3><table class="index"><tr><th>#</th><th>File</th><th>Artwork id</th><th>Verdict</th>'
            f"<th>Art. 50(2) a–e</th><th>Summary</th></tr>{index}</table>"
            if results
            else "<p>No artworks were audited.</p>"
        )
        + "</section>"
        + "".join(_card(i, r) for i, r in enumerate(results, start=1))
        + "<footer><p>Checklist marks: ✓ met, ◐ partly met, ✗ missing, – not checked (never counted as met)."
        "</p></footer>"
    )
    return _page("Atelier audit", body)


def format_dataset_text(report: dict) -> str:
    """The training set's license audit as plain text (`atelier audit --dataset`)."""
    problems = report.get("problems") or []
    return "\n".join(
        [f"{k}: {v}" for k, v in report.items() if k != "problems"]
        + ["problems:"]
        + [f"  - {p}" for p in problems]
        + (["  (none)"] if not problems else [])
    )


def _count_table(title: str, counts_by_key: dict) -> str:
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>" for k, v in counts_by_key.items())
    return (
        f"<h3>{escape(title)}</h3><table><tr><th>Key</th><th>Records</th></tr>{rows or '<tr><td>none</td></tr>'}"
        "</table>"
    )


def _listed(value: object) -> str:
    return (", ".join(map(str, value)) or "none") if isinstance(value, (list, tuple)) else str(value)


def format_dataset_html(report: dict, meta: dict) -> str:
    """The training set's license audit as one self-contained HTML page (summary, counts, policy, problems)."""
    problems = report.get("problems") or []
    status = "verified" if not problems else "failed"
    headline = "no problems found" if not problems else f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    figures = [
        ("training records", "train_records"),
        ("excluded records", "excluded_records"),
        ("attribution required", "attribution_required"),
        ("opt-outs honoured", "opt_outs_honoured"),
        ("noai records in training", "noai_records_in_training_set"),
    ]
    tiles = "".join(
        f'<div class="tile"><b>{escape(str(report.get(key, "–")))}</b>{label}</div>' for label, key in figures[:4]
    )
    more = figures[4:] + [("opted-out creators in training", "opted_out_creators_in_training_set")]
    rest = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(_listed(report.get(key, 'not reported')))}</td></tr>"
        for label, key in more
    )
    policy = report.get("policy") or {}
    policy_rows = "".join(
        f'<tr><th>{escape(str(k))}</th><td class="mono">{escape(str(v))}</td></tr>' for k, v in policy.items()
    )
    problem_list = "".join(f"<li>{escape(str(p))}</li>" for p in problems) if problems else "<li>none</li>"
    body = (
        "<h1>Atelier training-set license audit</h1>"
        '<p class="lead">The training set recomputed against the license policy and opt-outs in force.</p>'
        f'<section class="sheet"><h3 style="margin-top:0">Summary</h3>'
        f'<p><span class="badge {status}">{escape(headline)}</span></p><div class="tiles">{tiles}</div>'
        f"{_meta_table(meta, rest)}</section>"
        f'<section class="card {status}"><h3 style="margin-top:0">Problems</h3><ul class="notes">'
        f"{problem_list}</ul>"
        + _count_table("Records per license and decision", report.get("per_license_and_decision") or {})
        + _count_table("Excluded records per reason", report.get("excluded_per_reason") or {})
        + (f'<h3>Policy in force</h3><table class="meta">{policy_rows}</table>' if policy_rows else "")
        + "</section>"
    )
    return _page("Atelier dataset audit", body)
