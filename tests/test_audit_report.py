"""Untrusted text in pages and shells: the audit report shows hostile manifest text as text, in a real browser, with
no script running even without its Content-Security-Policy; and no code path hands a string to a shell."""

from __future__ import annotations

import ast
import re

from atelier import paths
from provenance.audit import format_html
from tests.browser import dump_dom

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def hostile_result() -> dict:
    """An audit result whose every field that comes from a file or a manifest carries an injection."""
    manifest = {"id": "abc", "artwork": {"generator": {"prompt": f"a blue spiral {SCRIPT}{IMG}"}}}
    return {"path": f"artworks/{IMG}.png", "status": "failed", "manifest": manifest,
            "summary": f"failed: {SCRIPT}",
            "checks": [{"name": f"hash binding {IMG}", "ok": False, "detail": f"pixels differ {SCRIPT}"},
                       {"name": "ledger copy", "ok": True, "detail": f"{IMG} agrees"}]}


def _title(dom: str) -> str:
    return re.search(r"<title>(.*?)</title>", dom, re.S).group(1)


def test_the_browser_check_sees_a_script_run(tmp_path):
    """Positive control: the same injection left unescaped and without a CSP does run, so the checks below can fail."""
    page = tmp_path / "control.html"
    page.write_text(f"<!doctype html><html><head><title>Atelier audit</title></head><body>{SCRIPT}</body></html>")
    assert _title(dump_dom(page)) == "pwned"


def test_audit_report_shows_hostile_text_escaped_and_runs_nothing(tmp_path):
    html = format_html([hostile_result()])
    assert CSP.search(html), "the report lost its Content-Security-Policy"
    shipped, bare = tmp_path / "report.html", tmp_path / "report-without-csp.html"
    shipped.write_text(html, encoding="utf-8")
    bare.write_text(CSP.sub("", html), encoding="utf-8")  # escaping alone must hold, without the CSP's help
    for page in (shipped, bare):
        dom = dump_dom(page)
        assert _title(dom) == "Atelier audit", page.name
        body = dom.split("<body>", 1)[1]
        assert "<script" not in body and "<img" not in body, page.name  # no element was created from the text
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in body  # shown as text, once per field
        assert body.count("&lt;script&gt;") == 3 and body.count("&lt;img") == 4


UNSAFE_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
                ("pickle", "load"), ("pickle", "loads"), ("yaml", "unsafe_load"), ("marshal", "loads")}


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
                    k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords):
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
    for folder in ("atelier", "stages", "provenance", "registry", "flows"):
        for path in sorted((paths.ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(paths.ROOT)
            problems += [f"{rel}:{line}: {what}" for line, what in _unsafe(ast.parse(text, str(path)))]
            problems += [f"{rel}: text '{m.group()}'" for m in re.finditer(r"shell\s*=\s*True|os\.system\s*\(", text)]
    assert not problems, "\n".join(problems)


def test_the_shell_check_is_not_vacuous():
    bad = ("import os, subprocess, yaml\nsubprocess.run(cmd, shell=True)\nos.system('x')\neval(s)\n"
           "yaml.load(s)\nos.execvp('a', [])\n")
    assert len(_unsafe(ast.parse(bad))) == 5
    assert not _unsafe(ast.parse("import yaml, subprocess\nyaml.load(s, Loader=yaml.SafeLoader)\n"
                                 "subprocess.run(['a'], shell=False)\nmodel.eval()\n"))
