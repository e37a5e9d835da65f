"""artworks/index.html: every artwork with its provenance card. A static local file: no scripts, no network.
Every value from metadata or prompts is HTML-escaped.

The folder is self-contained: every link and image on the page is relative to it, the plots are copied into
`plots/`, and each attribution list `attribution/<model>-v<N>.md` gets a readable `.html` rendering beside it, so
the folder can be moved or copied anywhere and still opens.
"""

from __future__ import annotations

import html
import json
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

from atelier.io import write_bytes, write_text

CSP = (
    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' file: data:; "
    "style-src 'unsafe-inline'\">"
)
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;background:#f6f5f2;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1.2rem}
.art{display:flex;gap:1rem;background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 3px #0002}
.art img{width:256px;height:256px;image-rendering:pixelated;border:1px solid #ddd;flex:none}
.card{font-size:.85rem;line-height:1.35;overflow-wrap:anywhere;min-width:0}
.card h2{font-size:1rem;margin:.1rem 0 .4rem}
.card dt{font-weight:600;color:#555} .card dd{margin:0 0 .35rem 0} .card ul{margin:.1rem 0;padding-left:1.1rem}
.ok{color:#1e8449} .warn{color:#b03a2e;font-weight:600} .ai{background:#fdebd0;padding:.2rem .4rem;border-radius:4px}
.scale{color:#666;font-size:.78rem;font-weight:400;display:block}
.badge{display:inline-block;font-size:.75rem;font-weight:700;padding:.1rem .45rem;border-radius:999px;
       margin:0 .3rem .3rem 0}
.badge.low-match{background:#fcf3cf;color:#7d6608;border:1px solid #d4ac0d}
.badge.replication{background:#fadbd8;color:#922b21;border:1px solid #cd6155}
.warnings{background:#fef5e7;border-left:3px solid #d68910;padding:.2rem .5rem .2rem 1.4rem;margin:.2rem 0 .5rem}
.plots figure{margin:1rem 0} .plots img{max-width:100%;border:1px solid #ddd;background:#fff}
.plots figcaption{color:#555;font-size:.85rem}
"""
CLIP_SCORE_SCALE = (
    "2.5 × max(cosine(artwork, prompt), 0) in the evaluator's embedding space, 0–2.5; higher means "
    "the artwork matches its prompt more closely"
)
SIMILARITY_SCALE = (
    "similarity: cosine similarity in the evaluator's embedding space, −1..1; a high similarity "
    "means alike in content or style, not a copy: the replication check above decides that"
)
PROMPT_MATCH_MEANING = "rank of the artwork's own prompt among the prompts the evaluator compared (1 = best match)"
PLOT_CAPTIONS = {
    "training_loss": "Training loss per step (lower is better).",
    "licenses": "Training records per license.",
    "clipscore": "CLIPScore of generated and real images (2.5 × cosine, 0–2.5; higher means closer to the prompt).",
    "samples": "One generation per evaluation prompt.",
}


def _href(*parts: str) -> str:
    """A relative URL from path parts (each percent-encoded), HTML-escaped for an attribute."""
    return escape("/".join(quote(p) for p in parts))


def _licenses(per_license: dict[str, int]) -> str:
    return ", ".join(f"{escape(k)}: {int(v)}" for k, v in sorted(per_license.items()))


def _attribution(data: dict, index_dir: Path) -> str:
    att = data["attribution"]
    stem = Path(att.get("file") or att["path"]).stem  # "path": manifests before atelier.provenance/2
    counts = f"{int(att['works'])} works by {int(att['creators'])} creators"
    if not (index_dir / "attribution" / f"{stem}.md").exists():
        return f'{counts} <span class="warn">(attribution list {escape(stem)}.md is not in this folder)</span>'
    return (
        f'<a class="attribution" href="{_href("attribution", stem + ".html")}">{counts}</a> '
        f'(<a href="{_href("attribution", stem + ".md")}">Markdown</a>)'
    )


def _replication(rep: dict) -> str:
    parts = []
    if "distance_ratio" in rep and "ratio_threshold" in rep:
        parts.append(
            f"distance ratio to the nearest training image {float(rep['distance_ratio']):.3f} "
            f"(flagged below {float(rep['ratio_threshold']):.3f})"
        )
    if "phash_distance" in rep and "phash_hamming_threshold" in rep:
        parts.append(
            f"perceptual hash {int(rep['phash_distance'])} bits from the nearest "
            f"(flagged within {int(rep['phash_hamming_threshold'])})"
        )
    detail = f'<span class="scale">{escape("; ".join(parts))}</span>' if parts else ""
    return f'<span class="verdict">{escape(rep["verdict"])}</span>{detail}'


def _licensed_only(model: dict) -> str:
    """The licensed-only verdict row: yes/no with its reason (atelier/components.py), or absent before it was kept."""
    if "licensed_only" not in model:
        return ""
    yes = bool(model["licensed_only"])
    return (
        f'<dt>Licensed only</dt><dd class="licensed-only {"ok" if yes else "warn"}">{"yes" if yes else "no"}'
        f'<span class="scale">{escape(str(model.get("licensed_only_reason") or ""))}</span></dd>'
    )


def card(m: dict, index_dir: Path) -> str:
    """One artwork and its provenance card (links relative to index_dir, where the gallery is)."""
    a, model, data, checks, rights = m["artwork"], m["model"], m["data"], m["checks"], m["rights"]
    rep = checks["replication"]
    verdict_class = "warn" if rep["flagged"] else "ok"
    match = checks.get("prompt_match")
    badges = []
    if match and match.get("low"):
        badges.append('<span class="badge low-match">low prompt match</span>')
    if rep["flagged"]:
        badges.append('<span class="badge replication">possible replication</span>')
    warnings = "".join(f"<li>{escape(str(w))}</li>" for w in checks.get("warnings") or [])
    match_row = ""
    if match:
        match_row = (
            f'<dt>Prompt match</dt><dd class="prompt-match {"warn" if match.get("low") else "ok"}">rank '
            f'{int(match["rank"])} of {int(match["of"])}<span class="scale">'
            f"{escape(match.get('meaning') or PROMPT_MATCH_MEANING)}</span></dd>"
        )
    selection = checks.get("selection")
    if selection:  # best-of-K: the figures above were selected on
        match_row += (
            f'<dt>Selected</dt><dd class="selection">best of {int(selection["candidates"])} seeds '
            f"({', '.join(str(int(s)) for s in selection['seeds'])}): the prompt match was selected on"
            f'<span class="scale">{escape(selection["rule"])}</span></dd>'
        )
    nearest = "".join(
        f"<li>{escape(n['title'])} by {escape(n['creator'])} ({escape(n['license'])}): similarity "
        f"{float(n['similarity']):.2f}</li>"
        for n in checks["nearest_training_images"]
    )
    return f"""
<article class="art" data-artwork-id="{escape(m["id"])}">
  <img src="{_href(Path(a["file"]).name)}" alt="{escape(a["generator"]["prompt"])}" width="256" height="256">
  <div class="card">
    {"".join(badges)}
    <h2 class="prompt">{escape(a["generator"]["prompt"])}</h2>
    {f'<ul class="warnings">{warnings}</ul>' if warnings else ""}
    <dl>
      <dt>Model</dt><dd class="model">{escape(model["name"])} version {escape(model["version"])}
        ({escape(model["alias"])}), run {escape(model["run_id"][:8])}</dd>
      {_licensed_only(model)}
      <dt>Generation</dt><dd>seed {int(a["generator"]["seed"])}, {int(a["generator"]["steps"])}
        {escape(a["generator"]["scheduler"])} steps, guidance scale {float(a["generator"]["guidance"])};
        {int(a["model_output_width"])} px upscaled to {int(a["width"])} px ({escape(a["resampler"])})</dd>
      <dt>Training data</dt><dd class="licenses">{int(data["record_count"])} licensed records:
        {_licenses(data["per_license"])}; {int(data["opt_outs_honoured"])} opt-outs honoured</dd>
      <dt>Attribution</dt><dd>{_attribution(data, index_dir)}</dd>
      <dt>CLIPScore</dt><dd><span class="clipscore">{float(checks["clip_score"]):.3f}</span>
        <span class="scale">{escape(checks.get("clip_score_scale") or CLIP_SCORE_SCALE)}</span></dd>
      {match_row}
      <dt>Replication check</dt><dd class="replication {verdict_class}">{_replication(rep)}</dd>
      <dt>Nearest training images</dt><dd><ul class="nearest">{nearest}</ul>
        <span class="scale">{escape(checks.get("similarity_scale") or SIMILARITY_SCALE)}</span></dd>
      <dt>Usage terms</dt><dd>{escape(rights["usage_terms"]["statement"])}</dd>
      <dt>Disclosure</dt><dd class="ai">{escape(rights["disclosure"])}</dd>
    </dl>
    <a href="{_href(m["id"] + ".provenance.json")}">provenance manifest (JSON)</a>
  </div>
</article>"""


def render(manifests: list[dict], index_dir: Path, plots: list[Path]) -> str:
    """The whole gallery page; `plots` are image files inside index_dir."""
    cards = "\n".join(card(m, index_dir) for m in manifests)
    figures = "\n".join(
        f'<figure><img src="{_href(*p.relative_to(index_dir).parts)}" alt="{escape(p.stem)}">'
        f"<figcaption>{escape(PLOT_CAPTIONS.get(p.stem, p.stem))}</figcaption></figure>"
        for p in plots
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{CSP}
<title>Atelier gallery</title><style>{STYLE}</style></head>
<body>
<h1>Atelier gallery</h1>
<p class="sub">{len(manifests)} AI-generated artworks, each with its provenance. Every image on this page was made by a
model, not by a person.</p>
<section class="grid">{cards}
</section>
<section class="plots"><h2>Training and evaluation</h2>
{figures}
</section>
</body></html>
"""


# --- attribution lists: the Markdown subset stages/license.py writes, as a page ----------------------------------

_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _plain(md: str) -> str:
    """Inline Markdown text as plain text: backslash escapes and entity references resolved, nothing else."""
    out, i = [], 0
    while i < len(md):
        if md[i] == "\\" and i + 1 < len(md) and md[i + 1] in _PUNCT:
            out.append(md[i + 1])
            i += 2
        elif md[i] == "&" and (m := _ENTITY.match(md, i)):
            out.append(html.unescape(m.group(0)))
            i = m.end()
        else:
            out.append(md[i])
            i += 1
    return "".join(out)


def _inline(md: str) -> str:
    """Inline Markdown as safe HTML: plain text, escaped; a cell that is one http(s) URL becomes a link."""
    text = _plain(md).strip()
    if re.fullmatch(r"https?://[^\s\"'<>]+", text):
        return f'<a href="{escape(text)}" rel="noreferrer nofollow">{escape(text)}</a>'
    return escape(text)


def _cells(row: str) -> list[str]:
    """A table row's cells, split on pipes that are not backslash-escaped."""
    row = row.strip()
    cells, cell, i = [], "", 0
    while i < len(row):
        if row[i] == "\\" and i + 1 < len(row):
            cell += row[i : i + 2]
            i += 2
            continue
        if row[i] == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += row[i]
        i += 1
    cells.append(cell)
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return cells


def markdown_html(md: str) -> str:
    """HTML for the Markdown subset of ATTRIBUTION.md (headings, paragraphs, pipe tables); every character of text
    is escaped, so no markup, link or script in the source reaches the page."""
    blocks: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
        elif m := re.match(r"(#{1,6})\s+(.*)$", line):
            level = len(m.group(1))
            blocks.append(f"<h{level}>{_inline(m.group(2).rstrip('#'))}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            head, body = rows[0], rows[1:]
            if body and all(re.fullmatch(r"\s*:?-+:?\s*", c) for c in body[0]):
                body = body[1:]
            th = "".join(f"<th>{_inline(c)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>\n" for r in body)
            blocks.append(f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{trs}</tbody>\n</table>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"#{1,6}\s|\|", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(blocks)


def attribution_page(md: str, name: str) -> str:
    """A standalone page for the attribution list `name` (its .md file name), linking back to the gallery."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{CSP}
<title>Attribution: {escape(Path(name).stem)}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:70rem}}
table{{border-collapse:collapse;font-size:.9rem}} th,td{{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;
vertical-align:top;overflow-wrap:anywhere}} th{{background:#f3f3f3}} nav{{font-size:.9rem;margin-bottom:1rem}}
</style></head>
<body>
<nav><a href="../index.html">Back to the gallery</a> · <a href="{_href(name)}">Markdown original</a></nav>
<p>Attribution list for model version {escape(Path(name).stem)}.</p>
{markdown_html(md)}
</body></html>
"""


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        write_bytes(path, data)


def write_gallery(artworks_dir: Path, plots: list[Path]) -> Path:
    """Render index.html from every published artwork's sidecar manifest in `artworks_dir` (newest first); copy the
    plots that exist into `artworks_dir/plots/` and write `attribution/<name>.html` beside each attribution list;
    return the page's path."""
    names = [p.name for p in plots]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ValueError(
            f"write_gallery: two plots are named {clash!r}; they would overwrite each other in {artworks_dir / 'plots'}"
        )
    copied = []
    for plot in plots:
        if plot.exists():
            target = artworks_dir / "plots" / plot.name
            if plot.resolve() != target.resolve():
                _write_if_changed(target, plot.read_bytes())
            copied.append(target)
    for md in sorted((artworks_dir / "attribution").glob("*.md")):
        page = attribution_page(md.read_text(encoding="utf-8"), md.name)
        _write_if_changed(md.with_suffix(".html"), page.encode("utf-8"))
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in artworks_dir.glob("*.provenance.json")]
    # quarantined artworks (in quarantine/, with no provenance sidecar) are never shown; nor is an artwork published
    # before quarantine existed that its replication check flagged
    manifests = [m for m in manifests if not m.get("checks", {}).get("replication", {}).get("flagged")]
    manifests.sort(key=lambda m: (m["artwork"]["created_at"], m["id"]), reverse=True)
    index = artworks_dir / "index.html"
    write_text(index, render(manifests, artworks_dir, copied))
    return index
