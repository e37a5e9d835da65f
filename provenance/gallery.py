"""artworks/index.html: every artwork with its provenance card. A static local file: no scripts, no network.
Every value from metadata or prompts is HTML-escaped."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from atelier.io import write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;background:#f6f5f2;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1.2rem}
.art{display:flex;gap:1rem;background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 3px #0002}
.art img{width:256px;height:256px;image-rendering:pixelated;border:1px solid #ddd;flex:none}
.card{font-size:.85rem;line-height:1.35;overflow-wrap:anywhere;min-width:0} .card h2{font-size:1rem;margin:.1rem 0 .4rem}
.card dt{font-weight:600;color:#555} .card dd{margin:0 0 .35rem 0}
.ok{color:#1e8449} .warn{color:#b03a2e;font-weight:600} .ai{background:#fdebd0;padding:.2rem .4rem;border-radius:4px}
.plots img{max-width:100%;margin:.5rem 0;border:1px solid #ddd;background:#fff}
"""


def _licenses(per_license: dict[str, int]) -> str:
    return ", ".join(f"{escape(k)}: {int(v)}" for k, v in sorted(per_license.items()))


def card(m: dict, index_dir: Path) -> str:
    """One artwork and its provenance card."""
    a, model, data, checks, rights = m["artwork"], m["model"], m["data"], m["checks"], m["rights"]
    rep = checks["replication"]
    verdict_class = "warn" if rep["flagged"] else "ok"
    attribution = Path(data["attribution"]["path"]).name
    nearest = "; ".join(f"{escape(n['title'])} by {escape(n['creator'])} ({escape(n['license'])}, "
                        f"similarity {float(n['similarity']):.2f})" for n in checks["nearest_training_images"])
    return f"""
<article class="art" data-artwork-id="{escape(m['id'])}">
  <img src="{escape(a['file'])}" alt="{escape(a['generator']['prompt'])}" width="256" height="256">
  <div class="card">
    <h2 class="prompt">{escape(a['generator']['prompt'])}</h2>
    <dl>
      <dt>Model</dt><dd class="model">{escape(model['name'])} version {escape(model['version'])}
        ({escape(model['alias'])}), run {escape(model['run_id'][:8])}</dd>
      <dt>Generation</dt><dd>seed {int(a['generator']['seed'])}, {int(a['generator']['steps'])}
        {escape(a['generator']['scheduler'])} steps, guidance {float(a['generator']['guidance'])};
        {int(a['model_output_width'])} px upscaled to {int(a['width'])} px ({escape(a['resampler'])})</dd>
      <dt>Training data</dt><dd class="licenses">{int(data['record_count'])} licensed records:
        {_licenses(data['per_license'])}; {int(data['opt_outs_honoured'])} opt-outs honoured</dd>
      <dt>Attribution</dt><dd><a class="attribution" href="attribution/{escape(attribution)}">
        {int(data['attribution']['works'])} works by {int(data['attribution']['creators'])} creators</a></dd>
      <dt>Replication check</dt><dd class="replication {verdict_class}">{escape(rep['verdict'])}</dd>
      <dt>Nearest training images</dt><dd>{nearest}</dd>
      <dt>CLIPScore</dt><dd class="clipscore">{float(checks['clip_score']):.3f}</dd>
      <dt>Usage terms</dt><dd>{escape(rights['usage_terms']['statement'])}</dd>
      <dt>Disclosure</dt><dd class="ai">{escape(rights['disclosure'])}</dd>
    </dl>
    <a href="{escape(m['id'])}.provenance.json">provenance manifest (JSON)</a>
  </div>
</article>"""


def render(manifests: list[dict], index_dir: Path, plots: list[Path]) -> str:
    """The whole gallery page."""
    cards = "\n".join(card(m, index_dir) for m in manifests)
    plot_tags = "\n".join(f'<img src="{escape(_rel(p, index_dir))}" alt="{escape(p.stem)}">' for p in plots
                          if p.exists())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'">
<title>Atelier gallery</title><style>{STYLE}</style></head>
<body>
<h1>Atelier gallery</h1>
<p class="sub">{len(manifests)} AI-generated artworks, each with its provenance. Every image on this page was made by a
model, not by a person.</p>
<section class="grid">{cards}
</section>
<section class="plots"><h2>Training and evaluation</h2>
{plot_tags}
</section>
</body></html>
"""


def _rel(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def write_gallery(artworks_dir: Path, plots: list[Path]) -> Path:
    """Render index.html from every sidecar manifest in `artworks_dir` (newest first); return its path."""
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in artworks_dir.glob("*.provenance.json")]
    manifests.sort(key=lambda m: (m["artwork"]["created_at"], m["id"]), reverse=True)
    index = artworks_dir / "index.html"
    write_text(index, render(manifests, artworks_dir, plots))
    return index
