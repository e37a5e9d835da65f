"""Untrusted text in pages and shells: the audit report shows hostile manifest text as text, in a real browser, with
no script running even without its Content-Security-Policy; and no code path hands a string to a shell."""

from __future__ import annotations

import ast
import re

from app.audit_report import format_html
from atelier import paths
from tests.browser import dump_dom

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def hostile_result() -> dict:
    """An audit result whose every field that comes from a file or a manifest carries an injection."""
    manifest = {"id": "abc", "artwork": {"generator": {"prompt": f"a blue spiral {SCRIPT}{IMG}"}}}
    return {
        "path": f"artworks/{IMG}.png",
        "status": "failed",
        "manifest": manifest,
        "summary": f"failed: {SCRIPT}",
        "checks": [
            {"name": f"hash binding {IMG}", "ok": False, "detail": f"pixels differ {SCRIPT}"},
            {"name": "ledger copy", "ok": True, "detail": f"{IMG} agrees"},
        ],
    }


def _title(dom: str) -> str:
    return re.search(r"<title>(.*?)</title>", dom, re.S).group(1)


def test_the_browser_check_sees_a_script_run(tmp_path):
    """Positive control: the same injection left unescaped and without a CSP does run, so the checks below can fail."""
    page = tmp_path / "control.html"
    page.write_text(f"<!doctype html><html><head><title>Atelier audit</title></head><body>{SCRIPT}</body></html>")
    assert _title(dump_dom(page)) == "pwned"


META = {
    "date": "2026-12-01T10:00:00+00:00",
    "tool": "Atelier 0123abc",
    "anchor": "operator signing folder",
    "mode": "workspace",
}


def test_audit_report_shows_hostile_text_escaped_and_runs_nothing(tmp_path):
    html = format_html([hostile_result()], META)
    assert CSP.search(html), "the report lost its Content-Security-Policy"
    shipped, bare = tmp_path / "report.html", tmp_path / "report-without-csp.html"
    shipped.write_text(html, encoding="utf-8")
    bare.write_text(CSP.sub("", html), encoding="utf-8")  # escaping alone must hold, without the CSP's help
    for page in (shipped, bare):
        dom = dump_dom(page)
        assert _title(dom) == "Atelier audit", page.name
        body = dom.split("<body>", 1)[1]
        assert "<script" not in body and "<img" not in body, page.name  # no element was created from the text
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in body  # shown as text
        # once per field (prompt, check detail; prompt, check name, check detail), and the path (the file name) and
        # the summary twice: in the summary's index and in the artwork's card
        assert body.count("&lt;script&gt;") == 4 and body.count("&lt;img") == 5


UNSAFE_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("pickle", "load"),
    ("pickle", "loads"),
    ("yaml", "unsafe_load"),
    ("marshal", "loads"),
}


def _unsafe(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) in UNSAFE_CALLS or (f.value.id == "os" and f.attr.startswith(("exec", "spawn"))):
                found.append((node.lineno, f"{f.value.id}.{f.attr}()"))
            if (f.value.id, f.attr) == ("yaml", "load") and not any(
                k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords
            ):
                found.append((node.lineno, "yaml.load() without SafeLoader"))
        if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
            found.append((node.lineno, f"{f.id}()"))
        for k in node.keywords:
            if k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                found.append((node.lineno, f"shell={ast.unparse(k.value)}"))
    return found


def test_nothing_reaches_a_shell_or_an_evaluator():
    """No shell=True, os.system, os.popen, eval/exec or unsafe deserialisation anywhere in the project's code."""
    problems = []
    for folder in ("atelier", "registry", "provenance", "stages", "flows", "app"):
        for path in sorted((paths.ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(paths.ROOT)
            problems += [f"{rel}:{line}: {what}" for line, what in _unsafe(ast.parse(text, str(path)))]
            problems += [f"{rel}: text '{m.group()}'" for m in re.finditer(r"shell\s*=\s*True|os\.system\s*\(", text)]
    assert not problems, "\n".join(problems)


def test_the_shell_check_is_not_vacuous():
    bad = (
        "import os, subprocess, yaml\nsubprocess.run(cmd, shell=True)\nos.system('x')\neval(s)\n"
        "yaml.load(s)\nos.execvp('a', [])\n"
    )
    assert len(_unsafe(ast.parse(bad))) == 5
    assert not _unsafe(
        ast.parse(
            "import yaml, subprocess\nyaml.load(s, Loader=yaml.SafeLoader)\n"
            "subprocess.run(['a'], shell=False)\nmodel.eval()\n"
        )
    )


# --- the report to hand on: summary, cards, thumbnails, the EU AI Act Art. 50(2) checklist -----------------------

ATTRIBUTION = (
    "# Attribution\n\n| work | creator | license |\n|---|---|---|\n| Blue study | Ada Example | CC-BY-4.0 |\n"
    "| Spiral no. 2 | B. Sample | CC-BY-SA-4.0 |\n"
)


def artwork_png(path, hue: int = 0, size: int = 512):
    """A real PNG (a smooth colour field) at `path`."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([(x * 255 + hue) % 256, y * 200 + 30, (1 - x * y) * 255], axis=-1).astype("uint8")
    Image.fromarray(rgb).save(path)
    return path


def manifest(n: int = 1) -> dict:
    """An atelier.provenance/1 manifest with the fields the report reads."""
    from provenance.manifest import AI_DISCLOSURE, DIGITAL_SOURCE_TYPE

    return {
        "id": f"{n:016x}",
        "artwork": {
            "file": f"art-{n}.png",
            "created_at": "2026-11-30T09:15:00+00:00",
            "generator": {"prompt": "a blue spiral composition", "seed": n},
            "watermark": {"method": "dwtDct", "id": 1000 + n},
        },
        "model": {"name": "atelier-diffusion", "version": "3", "weights_sha256": "ab" * 32},
        "data": {"attribution": {"creators": 2, "works": 2, "sha256": "cd" * 32}},
        "rights": {
            "ai_generated": True,
            "digital_source_type": DIGITAL_SOURCE_TYPE,
            "disclosure": AI_DISCLOSURE,
            "usage_terms": {"statement": "Non-commercial use only. Attribution: credit the creators."},
        },
    }


def marking(n: int = 1, **changes) -> dict:
    facts = {
        "c2pa_state": "Trusted",
        "signed_at": "2026-11-30T09:15:02+00:00",
        "trusted_timestamp": False,
        "watermark": {"expected": 1000 + n, "read": 1000 + n, "distance": 0, "readable": True},
        "ai_disclosure": True,
        "logged": True,
    }
    return facts | changes


def results(tmp_path) -> list[dict]:
    """A verified, a recovered and a failed artwork (real PNGs in tmp_path), and one whose file is gone."""
    ok = [
        {"name": "C2PA signature and trust chain", "ok": True, "detail": "Trusted (signed under the bundle's CA)"},
        {"name": "hash binding", "ok": True, "detail": "pixels match the manifest's sha256"},
        {"name": "signed log entry", "ok": True, "detail": "entry 4 of the signed log agrees"},
    ]
    verified = {
        "path": str(artwork_png(tmp_path / "art-1.png")),
        "status": "verified",
        "summary": "all checks passed, C2PA Trusted",
        "checks": ok,
        "notes": ["sidecar missing: the embedded manifest is enough"],
        "manifest": manifest(1),
        "attribution": ATTRIBUTION,
        "marking": marking(1),
    }
    recovered = {
        "path": str(artwork_png(tmp_path / "copy.png", hue=90)),
        "status": "recovered",
        "summary": "not verified; provenance recovered from the log by watermark id 1002",
        "checks": [
            {"name": "content credentials", "ok": False, "detail": "no C2PA manifest in the file"},
            {"name": "log recovery", "ok": True, "detail": "watermark id 1002 (3 bits off)"},
        ],
        "notes": [],
        "manifest": manifest(2),
        "attribution": None,
        "marking": marking(
            2,
            c2pa_state=None,
            signed_at=None,
            watermark={"expected": 1002, "read": 1002, "distance": 3, "readable": True},
        ),
    }
    failed = {
        "path": str(artwork_png(tmp_path / "art-3.png", hue=180)),
        "status": "failed",
        "summary": "failed: hash binding",
        "checks": [
            {"name": "C2PA signature and trust chain", "ok": False, "detail": "Invalid: assertion.dataHash.mismatch"},
            {"name": "hash binding", "ok": False, "detail": "pixels sha256 1f2e... differ"},
        ],
        "manifest": manifest(3),
        "marking": marking(
            3,
            c2pa_state="Invalid",
            logged=False,
            watermark={"expected": 1003, "read": 77, "distance": 9, "readable": False},
        ),
    }
    gone = {
        "path": str(tmp_path / "missing.png"),
        "status": "failed",
        "summary": "unreadable: no such file",
        "checks": [{"name": "readable", "ok": False, "detail": "no such file"}],
        "manifest": None,
    }
    return [verified, recovered, failed, gone]


def _states(result: dict) -> list[str]:
    from app.audit_report import eu_checklist

    return [p["state"] for p in eu_checklist(result)]


def test_checklist_states_each_point_and_says_what_is_missing(tmp_path):
    from app.audit_report import checklist_summary, eu_checklist

    verified, recovered, failed, gone = results(tmp_path)
    # without a timestamp authority the time of signing is partly met, never met
    assert _states(verified) == ["met", "partly met", "met", "met", "met"]
    points = eu_checklist(verified)
    assert [p["ok"] for p in points] == [True, None, True, True, True]
    assert "no trusted timestamp" in points[1]["detail"]
    assert _states({**verified, "marking": marking(1, trusted_timestamp=True)})[1] == "met"
    assert _states(recovered) == ["missing", "missing", "met", "met", "met"]
    assert _states(failed) == ["missing", "missing", "missing", "met", "missing"]
    assert "read as 77 (9 bits off), not the manifest's id 1003" in eu_checklist(failed)[2]["detail"]
    near = {"expected": 1001, "read": 1009, "distance": 1, "readable": True}  # within the audit's tolerance
    assert _states({**verified, "marking": marking(1, watermark=near)})[2] == "met"
    assert checklist_summary(eu_checklist(failed)) == (
        "1 of 5 met; missing: (a) signed machine-readable metadata, (b) time of signing, (c) imperceptible mark "
        "present and readable, (e) detectable by the public: logged in the signed public log"
    )
    assert _states({**verified, "marking": marking(1, c2pa_state="Valid")})[0] == "partly met"


def test_a_fact_the_audit_did_not_report_is_not_checked_never_met(tmp_path):
    from app.audit_report import eu_checklist

    verified = results(tmp_path)[0]
    assert _states({**verified, "marking": None}) == ["not checked"] * 5
    assert [p["ok"] for p in eu_checklist({"path": "x.png"})] == [None] * 5
    partial = marking(1)
    del partial["logged"], partial["trusted_timestamp"]
    partial["watermark"] = {"expected": 1001, "read": None, "distance": None, "readable": None}  # too small to read
    assert _states({**verified, "marking": partial}) == ["met", "partly met", "not checked", "met", "not checked"]
    partial["watermark"] = None
    assert _states({**verified, "marking": partial})[2] == "not checked"


def test_text_report_opens_with_the_summary_and_lists_each_artwork(tmp_path):
    from app.audit_report import format_text

    text = format_text(results(tmp_path), META)
    head = text.splitlines()[:6]
    assert head[0] == "Atelier provenance audit" and "date: 2026-12-01T10:00:00+00:00" in head
    assert "artworks: 4 (verified 1, recovered 1, not Atelier 0, failed 2, tampered 0)" in head
    assert "tool: Atelier 0123abc" in head and "trust anchor: operator signing folder" in head
    assert "  note: sidecar missing: the embedded manifest is enough" in text
    assert "usage terms: Non-commercial use only." in text and "credits: creators: 2; works: 2" in text
    assert "EU AI Act Art. 50(2): 4 of 5 met; partly met: (b) time of signing" in text


def test_html_report_has_summary_thumbnails_credits_terms_and_checklist(tmp_path):
    import base64
    import io

    from PIL import Image

    from app.audit_report import CSP, format_html

    html = format_html(results(tmp_path), META)
    assert f'content="{CSP}"' in html and "<script" not in html
    summary = html.split('<section class="card', 1)[0]
    for fact in (
        "<b>1</b>verified",
        "<b>1</b>recovered",
        "<b>2</b>failed",
        "2026-12-01T10:00:00+00:00",
        "Atelier 0123abc",
        "operator signing folder",
    ):
        assert fact in summary, fact
    thumbs = re.findall(r'<img class="thumb" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(thumbs) == 3 and html.count("no preview") == 1  # the missing file has none
    assert max(Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size) == 128
    assert html.count("Non-commercial use only.") == 3 and "Blue study | Ada Example" in html
    assert "trainedAlgorithmicMedia" in html and "not a photograph" in html
    assert "sidecar missing: the embedded manifest is enough" in html
    assert html.count("EU AI Act Article 50(2)") == 4


def test_html_report_looks_like_a_document_in_a_browser(tmp_path):
    """Rendered by headless Chromium: the thumbnails load under the CSP, the page is not blank; screenshot kept."""
    from app.audit_report import format_html
    from tests.browser import screenshot

    page = tmp_path / "audit.html"
    page.write_text(format_html(results(tmp_path), META), encoding="utf-8")
    dom = dump_dom(page)
    assert _title(dom) == "Atelier audit" and dom.count('<img class="thumb"') == 3
    png = screenshot(page, "audit-report.png", width=1100, height=5200)
    from PIL import Image

    colours = Image.open(png).convert("RGB").resize((64, 64)).getcolors(64 * 64)
    assert colours is not None and len(colours) > 20  # text, tiles and thumbnails were drawn


def dataset_report(problems: list[str]) -> dict:
    return {
        "train_records": 40,
        "excluded_records": 7,
        "per_license_and_decision": {"CC-BY-4.0 / train": 30, "CC0-1.0 / train": 10, "none / exclude": 7},
        "excluded_per_reason": {"no license": 5, "opted out": 2},
        "attribution_required": 30,
        "opt_outs_honoured": 2,
        "opted_out_creators_in_training_set": [],
        "noai_records_in_training_set": 0,
        "policy": {"allow_non_commercial": False, "allow_share_alike": True},
        "problems": problems,
    }


def test_dataset_html_report_shows_counts_policy_and_problems(tmp_path):
    from app.audit_report import format_dataset_html, format_dataset_text

    meta = META | {"anchor": "none needed: a license audit of the training set"}
    clean = format_dataset_html(dataset_report([]), meta)
    assert "no problems found" in clean and "<b>40</b>training records" in clean and "CC0-1.0 / train" in clean
    bad = format_dataset_html(dataset_report([f"creator '{IMG}' is missing from ATTRIBUTION.md"]), meta)
    assert "1 problem<" in bad and "<img" not in bad and "&lt;img" in bad
    assert "problems:\n  (none)" in format_dataset_text(dataset_report([]))
    page = tmp_path / "dataset.html"
    page.write_text(bad, encoding="utf-8")
    assert _title(dump_dom(page)) == "Atelier dataset audit"


def test_the_anchor_is_named_by_its_common_name_and_fingerprint(tmp_path):
    from provenance.keys import create_signing_identity
    from provenance.signed_json import anchor_description

    identity = create_signing_identity(tmp_path / "keys", subject="Test bundle")
    text = anchor_description(identity.ca_pem())
    assert re.fullmatch(r"CN=Test bundle CA, sha256 fingerprint [0-9a-f]{64}", text)
