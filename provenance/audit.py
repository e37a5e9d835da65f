"""`atelier audit PATH...`: verify an artwork's content credentials and follow its lineage, or recover its
provenance from the ledger (by watermark, then perceptual hash) when the credentials are gone.

Statuses: `verified` (every check passed), `recovered` (no valid credentials; the ledger's manifest was found by
watermark or perceptual hash: reported as recovered, never as verified), `failed` (a check failed or nothing found).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from atelier import paths
from atelier.config import load_params
from atelier.hashing import phash, pixels_sha256
from atelier.models.metrics import phash_distance
from atelier.lineage import training_records, where_md5_is_recorded
from provenance import ledger, watermark
from provenance.keys import ensure_signing_identity
from provenance.png import read_manifest
from provenance.signing import read_credentials

PHASH_CONFIRM_BITS = 10  # a watermark match must also be this close in perceptual hash
PHASH_ONLY_BITS = 6      # without a watermark, only a very close perceptual hash counts


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _lineage_checks(m: dict) -> list[Check]:
    """The model version is registered with the recorded weights; DVC knows the data; the policy allows every record."""
    from registry import tracking
    from atelier.rights import decide, read_opt_outs

    checks = []
    model = m["model"]
    try:
        version = tracking.get_version(model["name"], model["version"])
        tags = version["tags"]
        same = tags.get("weights_sha256") == model["weights_sha256"] and version["run_id"] == model["run_id"]
        checks.append(Check("model in registry", same,
                            f"{model['name']} v{model['version']} registered" + (
                                " with the recorded weights digest and run" if same else
                                f" but its weights digest/run differ ({tags.get('weights_sha256')}, {version['run_id']})")))
        if tags.get("takedown"):
            checks.append(Check("model not taken down", False, f"takedown recorded: {tags['takedown']}"))
    except LookupError as exc:
        checks.append(Check("model in registry", False, str(exc)))
    md5 = m["data"]["dvc_md5"]
    where = where_md5_is_recorded(md5)
    checks.append(Check("training data known to DVC", where is not None,
                        f"md5 {md5} found in {where}" if where else f"md5 {md5} is in neither dvc.lock, its git "
                        "history nor the DVC cache"))
    try:
        records = training_records(md5)
    except FileNotFoundError as exc:
        checks.append(Check("training licenses allowed", False, str(exc)))
        return checks
    policy, opt_outs = load_params().license.policy, read_opt_outs(paths.OPT_OUT)
    refused = [(r["record_id"][:12], d["reason"]) for r in records.to_dict("records")
               if (d := decide(r, policy, opt_outs))["decision"] != "train"]
    checks.append(Check("training licenses allowed", not refused,
                        f"all {len(records)} training records allowed by the policy and opt-outs in force" if not
                        refused else f"{len(refused)} training records are not allowed now, e.g. {refused[:3]}"))
    return checks


def _recover(image: Image.Image, conn) -> tuple[dict | None, str]:
    """Find the ledger row of a stripped or re-encoded copy: watermark confirmed by perceptual hash, else phash."""
    h = phash(image)
    if min(image.size) >= 256:
        found = ledger.by_watermark(conn, watermark.decode(image.convert("RGB")))
        if found is not None:
            distance = phash_distance(h, found["phash"])
            if distance <= PHASH_CONFIRM_BITS:
                return found, (f"watermark id {found['watermark_id']} ({found['match']['distance']} bits off), confirmed "
                               f"by perceptual hash ({distance} bits)")
    close = ledger.by_phash(conn, h, max_distance=PHASH_ONLY_BITS)
    if len(close) == 1 or (len(close) > 1 and close[0]["distance"] < close[1]["distance"]):
        return close[0], f"perceptual hash only ({close[0]['distance']} bits), no watermark match"
    return None, "no watermark or perceptual-hash match in the ledger"


def audit_artwork(path: Path, conn, ca_pem: str, lineage: bool = True) -> dict:
    """Audit one artwork file; return {path, status, checks, manifest, summary}."""
    checks: list[Check] = []
    try:
        creds = read_credentials(path, ca_pem)
        image = Image.open(path)
        image.load()
    except (ValueError, OSError) as exc:
        return {"path": str(path), "status": "failed", "manifest": None, "summary": f"unreadable: {exc}",
                "checks": [asdict(Check("readable", False, str(exc)))]}
    manifest = creds["atelier"]
    if creds["state"] is None:
        found, how = _recover(image, conn)
        if found is None:
            return {"path": str(path), "status": "failed", "manifest": None,
                    "summary": f"no content credentials and {how}",
                    "checks": [asdict(Check("content credentials", False, "no C2PA manifest in the file")),
                               asdict(Check("ledger recovery", False, how))]}
        checks = [Check("content credentials", False, "no C2PA manifest in the file (stripped or re-encoded)"),
                  Check("ledger recovery", True, f"provenance of artwork {found['id']} recovered by {how}")]
        if lineage:
            checks += _lineage_checks(found["manifest"])
        return {"path": str(path), "status": "recovered", "manifest": found["manifest"],
                "summary": f"not verified; provenance recovered from the ledger by {how}", "checks": [asdict(c) for c in checks]}

    state_ok = creds["state"] == "Trusted"
    codes = ", ".join(creds["codes"]) or creds.get("error") or "no failure codes"
    checks.append(Check("C2PA signature and trust chain", state_ok,
                        "Trusted (signed under the local CA)" if state_ok else f"{creds['state']}: {codes}"))
    if manifest is None:
        checks.append(Check("Atelier assertion", False, "the content credentials hold no org.atelier.provenance"))
    else:
        sha = pixels_sha256(image)
        checks.append(Check("hash binding", sha == manifest["artwork"]["sha256_pixels"],
                            "pixels match the manifest's sha256" if sha == manifest["artwork"]["sha256_pixels"]
                            else f"pixels sha256 {sha[:16]}... differ from the manifest's"))
        embedded = read_manifest(path) if path.suffix.lower() == ".png" else None
        checks.append(Check("embedded copy", embedded == manifest,
                            "iTXt copy equals the signed manifest" if embedded == manifest else
                            "iTXt copy missing or differs from the signed manifest"))
        sidecar = path.with_name(f"{manifest['id']}.provenance.json")
        if sidecar.exists():
            same = json.loads(sidecar.read_text(encoding="utf-8")) == manifest
            checks.append(Check("sidecar copy", same, f"{sidecar.name} " + ("agrees" if same else "differs")))
        else:
            checks.append(Check("sidecar copy", False, f"{sidecar.name} is missing"))
        row = ledger.get(conn, manifest["id"])
        ledger_same = row is not None and row["manifest"] == manifest
        checks.append(Check("ledger copy", ledger_same, "ledger row agrees" if ledger_same else
                            ("no ledger row for this artwork" if row is None else "ledger row differs")))
        if lineage:
            checks += _lineage_checks(manifest)
    ok = all(c.ok for c in checks)
    failed = [c.name for c in checks if not c.ok]
    return {"path": str(path), "status": "verified" if ok else "failed", "manifest": manifest,
            "summary": "all checks passed, C2PA Trusted" if ok else f"failed: {', '.join(failed)}",
            "checks": [asdict(c) for c in checks]}


def audit_paths(files: list[Path], lineage: bool = True) -> list[dict]:
    """Audit several artworks against the project's ledger and local CA."""
    ca_pem = ensure_signing_identity().ca_pem()
    conn = ledger.open_ledger(paths.LEDGER)
    try:
        return [audit_artwork(Path(f), conn, ca_pem, lineage) for f in files]
    finally:
        conn.close()


def format_table(results: list[dict]) -> str:
    """A readable plain-text report."""
    lines = []
    for r in results:
        lines.append(f"{r['path']}: {r['status'].upper()} - {r['summary']}")
        for c in r["checks"]:
            lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    return "\n".join(lines)


def format_html(results: list[dict]) -> str:
    """A standalone HTML report; every value is escaped, no scripts."""
    from html import escape

    rows = []
    for r in results:
        m = r["manifest"] or {}
        prompt = escape(m.get("artwork", {}).get("generator", {}).get("prompt", "(no manifest)"))
        checks = "".join(f"<li class=\"{'ok' if c['ok'] else 'fail'}\">{escape(c['name'])}: {escape(c['detail'])}</li>"
                         for c in r["checks"])
        rows.append(f"<section class=\"{escape(r['status'])}\"><h2>{escape(r['path'])}: {escape(r['status'])}</h2>"
                    f"<p class=\"prompt\">{prompt}</p><p>{escape(r['summary'])}</p><ul>{checks}</ul></section>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<title>Atelier audit</title><style>body{font-family:sans-serif;margin:2rem}.ok{color:#1e8449}"
            ".fail{color:#b03a2e}.verified h2{color:#1e8449}.failed h2{color:#b03a2e}.recovered h2{color:#b9770e}"
            "</style></head><body><h1>Atelier audit</h1>" + "".join(rows) + "</body></html>\n")
