import copy
import json

from PIL import Image

from provenance.gallery import write_gallery
from provenance.manifest import build_manifest
from tests.browser import dump_dom, screenshot
from tests.test_manifest import FACTS

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _artworks(folder, prompts):
    for i, prompt in enumerate(prompts):
        facts = copy.deepcopy(FACTS)
        art_id = f"{i:016x}"
        facts["artwork"].update(id=art_id, file=f"{art_id}.png")
        facts["artwork"]["generator"]["prompt"] = prompt
        facts["checks"]["nearest_training_images"][0]["creator"] = "Eve <b>Bold</b>"
        m = build_manifest(**facts)
        Image.new("RGB", (256, 256), (40 * i, 90, 200)).save(folder / f"{art_id}.png")
        (folder / f"{art_id}.provenance.json").write_text(json.dumps(m))
    (folder / "attribution").mkdir(exist_ok=True)
    (folder / "attribution" / "m-v3.md").write_text("# Attribution\n")


def test_gallery_renders_every_card_and_runs_no_script(tmp_path):
    _artworks(tmp_path, ["a blue spiral composition", HOSTILE, "a red grid composition"])
    index = write_gallery(tmp_path, plots=[])
    dom = dump_dom(index)
    assert dom.count('class="art"') == 3
    assert dom.count('class="card"') == 3
    assert "<title>Atelier gallery</title>" in dom and "pwned</title>" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "Eve &lt;b&gt;Bold&lt;/b&gt;" in dom
    shot = screenshot(index, "gallery-unit.png")
    assert Image.open(shot).size[0] >= 1000
