import copy
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from PIL import Image

from atelier.gallery import markdown_html, write_gallery
from provenance.manifest import build_manifest
from stages.license import attribution_markdown
from tests.browser import dump_dom, screenshot
from tests.test_manifest import FACTS

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
CREATORS = [
    "Ann",
    "Eve <b>Bold</b>",
    "Mallory | <script>alert(1)</script> & [x](javascript:alert(1)) `c`",
    '=HYPERLINK("http://x")',
    "Zoë \\ Back&amp;slash",
]


def _attribution_md() -> str:
    """An attribution list as the license stage writes it, with hostile creator names."""
    rows = [
        {
            "creator": c,
            "title": f"Work {i}",
            "source_url": f"https://example.org/{i}",
            "source_uri": "",
            "license_spdx": "CC-BY-4.0",
            "record_id": f"r{i}",
            "requires_attribution": True,
        }
        for i, c in enumerate(CREATORS)
    ]
    rows.append(
        {
            "creator": "Ann",
            "title": "Evil link",
            "source_url": "javascript:alert(1)",
            "source_uri": "",
            "license_spdx": "CC-BY-4.0",
            "record_id": "r9",
            "requires_attribution": True,
        }
    )
    return attribution_markdown(pd.DataFrame(rows))


def _artworks(folder, prompts, checks=None):
    """Artworks with sidecar manifests in `folder`; `checks[i]` (if given) is merged into artwork i's checks."""
    for i, prompt in enumerate(prompts):
        facts = copy.deepcopy(FACTS)
        art_id = f"{i:016x}"
        facts["artwork"].update(id=art_id, file=f"{art_id}.png")
        facts["artwork"]["generator"]["prompt"] = prompt
        facts["checks"]["nearest_training_images"][0]["creator"] = "Eve <b>Bold</b>"
        m = build_manifest(**facts)
        m["checks"].update((checks or {}).get(i, {}))
        Image.new("RGB", (256, 256), (40 * i, 90, 200)).save(folder / f"{art_id}.png")
        (folder / f"{art_id}.provenance.json").write_text(json.dumps(m))
    (folder / "attribution").mkdir(exist_ok=True)
    (folder / "attribution" / "m-v3.md").write_text(_attribution_md())


def _plots(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, colour in (("training_loss", (200, 220, 255)), ("clipscore", (255, 230, 200))):
        Image.new("RGB", (480, 160), colour).save(folder / f"{name}.png")
        out.append(folder / f"{name}.png")
    return out + [folder / "not_made_yet.png"]  # a plot that does not exist is left out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[k] for k in ("href", "src") if attrs.get(k)]
        self.classes += (attrs.get("class") or "").split()


def _links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _assert_local_links_resolve(page: Path, root: Path) -> int:
    """Every non-web link of `page` is relative, names an existing file, and stays inside `root`; return the count."""
    local = 0
    for url in _links(page).urls:
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            continue
        assert not parsed.scheme and not url.startswith("/"), f"{page.name}: {url!r} is not relative"
        target = (page.parent / unquote(parsed.path)).resolve()
        assert target.is_file(), f"{page.name}: {url!r} does not resolve to a file"
        assert target.is_relative_to(root.resolve()), f"{page.name}: {url!r} leaves the gallery folder"
        local += 1
    return local


def test_gallery_folder_is_self_contained_and_survives_a_move(tmp_path):
    artworks = tmp_path / "run" / "artworks"
    artworks.mkdir(parents=True)
    _artworks(artworks, ["a blue spiral composition", "a red grid composition"])
    write_gallery(artworks, plots=_plots(tmp_path / "run" / "reports"))
    moved = shutil.move(artworks, tmp_path / "elsewhere" / "copy-of-gallery")
    shutil.rmtree(tmp_path / "run")  # the plots' originals are gone too
    moved = Path(moved)
    index = moved / "index.html"
    # 2 images + 2 manifests + 2 attribution pages + 2 Markdown links + 2 plots
    assert _assert_local_links_resolve(index, moved) == 10
    assert sorted(p.name for p in (moved / "plots").iterdir()) == ["clipscore.png", "training_loss.png"]
    assert "not_made_yet" not in index.read_text()
    attribution_page = moved / "attribution" / "m-v3.html"
    assert _assert_local_links_resolve(attribution_page, moved) == 2  # back to the gallery, the Markdown original


def test_attribution_page_is_readable_and_escapes_everything(tmp_path):
    _artworks(tmp_path, ["a blue spiral composition"])
    write_gallery(tmp_path, plots=[])
    page = (tmp_path / "attribution" / "m-v3.html").read_text()
    assert 'href="attribution/m-v3.html"' in (tmp_path / "index.html").read_text()
    assert "<table>" in page and page.count("<tr>") == 1 + len(CREATORS) + 1
    assert "Eve &lt;b&gt;Bold&lt;/b&gt;" in page and "<b>" not in page
    assert "<script" not in page and 'href="javascript' not in page
    assert page.count("<a ") == 2 + len(CREATORS)  # back, Markdown original, one https source per work
    assert '<a href="https://example.org/0" rel="noreferrer nofollow">' in page


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells[-1] += data


def test_markdown_rendering_shows_each_name_exactly_as_recorded():
    parser = _Cells()
    parser.feed(markdown_html(_attribution_md()))
    creators = parser.cells[4::4]
    expected = sorted(CREATORS + ["Ann"])
    expected[expected.index('=HYPERLINK("http://x")')] = '\'=HYPERLINK("http://x")'  # neutralised for spreadsheets
    assert sorted(creators) == sorted(expected)


def test_low_prompt_match_badge_and_warnings_only_when_flagged(tmp_path):
    checks = {
        0: {"prompt_match": {"rank": 4, "of": 37, "low": True}, "warnings": ["prompt <far> from the data"]},
        1: {"prompt_match": {"rank": 1, "of": 37, "low": False}, "warnings": []},
        2: {},
    }  # an older manifest: no prompt_match, no warnings
    _artworks(tmp_path, ["a", "b", "c"], checks)
    page = write_gallery(tmp_path, plots=[]).read_text()
    cards = {c.split('"', 1)[0]: c for c in page.split('data-artwork-id="')[1:]}
    low, fine, old = cards[f"{0:016x}"], cards[f"{1:016x}"], cards[f"{2:016x}"]
    assert 'class="badge low-match">low prompt match' in low and "rank 4 of 37" in low
    assert "low-match" not in fine and "rank 1 of 37" in fine
    assert "low-match" not in old and "Prompt match" not in old
    assert '<ul class="warnings"><li>prompt &lt;far&gt; from the data</li></ul>' in low
    assert 'class="warnings"' not in fine and 'class="warnings"' not in old
    assert page.count('class="badge') == 1


def test_each_card_says_licensed_only_yes_or_no_with_its_reason(tmp_path):
    _artworks(tmp_path, ["a", "b", "c"])
    verdicts = {
        0: (True, "every part was trained here on the licensed set"),
        1: (False, "not licensed-only: clip '<tiny-clip>' was trained on unknown data: web pairs"),
    }
    for i, (verdict, reason) in verdicts.items():  # manifests as generate writes them from the model credential
        sidecar = tmp_path / f"{i:016x}.provenance.json"
        m = json.loads(sidecar.read_text())
        m["model"].update(components=[], licensed_only=verdict, licensed_only_reason=reason)
        sidecar.write_text(json.dumps(m))
    page = write_gallery(tmp_path, plots=[]).read_text()
    cards = {c.split('"', 1)[0]: c for c in page.split('data-artwork-id="')[1:]}
    yes, no, old = cards[f"{0:016x}"], cards[f"{1:016x}"], cards[f"{2:016x}"]
    assert '<dd class="licensed-only ok">yes<span class="scale">every part was trained here' in yes
    assert '<dd class="licensed-only warn">no<span class="scale">not licensed-only: clip &#x27;&lt;tiny-clip&gt;' in no
    assert "Licensed only" not in old  # a manifest made before the verdict was kept says nothing


def test_every_figure_states_its_scale(tmp_path):
    _artworks(
        tmp_path,
        ["a", "b"],
        {
            1: {
                "clip_score_scale": "CLIPScore scale from the manifest",
                "similarity_scale": "similarity scale from the manifest",
            }
        },
    )
    page = write_gallery(tmp_path, plots=[]).read_text()
    old, new = (c for c in page.split('data-artwork-id="')[1:])
    assert "0–2.5" in new or "0–2.5" in old
    by_id = {c[:16]: c for c in (old, new)}
    assert "2.5 × max(cosine(artwork, prompt), 0)" in by_id[f"{0:016x}"]
    assert "−1..1" in by_id[f"{0:016x}"] and "no replication detected" in by_id[f"{0:016x}"]
    assert "CLIPScore scale from the manifest" in by_id[f"{1:016x}"]
    assert "similarity scale from the manifest" in by_id[f"{1:016x}"]
    assert "distance ratio to the nearest training image 0.800 (flagged below 0.333)" in page


def test_gallery_renders_every_card_and_runs_no_script(tmp_path):
    _artworks(
        tmp_path,
        ["a blue spiral composition", HOSTILE, "a red grid composition"],
        {
            0: {
                "prompt_match": {"rank": 3, "of": 37, "low": True},
                "warnings": ["low prompt match: the evaluator ranks its own prompt 3 of 37"],
            }
        },
    )
    index = write_gallery(tmp_path, plots=_plots(tmp_path / "reports"))
    dom = dump_dom(index)
    assert dom.count('class="art"') == 3
    assert dom.count('class="card"') == 3
    assert "<title>Atelier gallery</title>" in dom and "pwned</title>" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "Eve &lt;b&gt;Bold&lt;/b&gt;" in dom
    shot = screenshot(index, "gallery-unit.png")
    assert Image.open(shot).size[0] >= 1000
    attribution = tmp_path / "attribution" / "m-v3.html"
    attribution_dom = dump_dom(attribution)
    assert "pwned" not in attribution_dom and "<title>Attribution: m-v3</title>" in attribution_dom
    screenshot(attribution, "attribution-unit.png", height=700)
