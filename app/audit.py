"""`atelier audit PATH...`: verify an artwork's content credentials and what they name, or recover its provenance by
watermark or perceptual hash when the credentials are gone.

Two ways to audit:
- **with a published bundle** (`--bundle DIR`, what an auditor, buyer or rights holder does): trust rests on the
  bundle's anchor (a CA certificate) only; the model credential, dataset card and attribution list embedded in the
  artwork are checked against it and against the bundle's copies, and the artwork against the bundle's signed log.
  Needs no workspace, key, MLflow, DVC cache or ledger.
- **in the operator's workspace** (no `--bundle`): trust rests on the signing folder's CA certificate, the artwork is
  compared with its ledger row, and the lineage is followed (registry, DVC, the policy in force).

The audit never creates keys: without an anchor it says so. Each file gets one verdict (VERDICTS: its meaning and
the exit code it gives): `verified`, `tampered` (its credentials or pixels do not hold), `failed` (the file holds,
a record about it does not: registry, DVC, policy; or the file cannot be read), `recovered` (no credentials; its
provenance found by watermark or perceptual hash, never reported as verified) and `not_atelier` (no credentials and
no match: nothing says Atelier made it). A missing or renamed sidecar is a note, not a failure: the embedded signed
manifest is enough.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from atelier import paths
from atelier.hashing import phash, phash_distance, pixels_sha256
from atelier.version import code_version
from provenance import credentials, ledger, signed_json, watermark
from provenance.manifest import DIGITAL_SOURCE_TYPE
from provenance.png import read_manifest
from provenance.signing import read_credentials

PHASH_CONFIRM_BITS = 10  # a watermark match must also be this close in perceptual hash
PHASH_ONLY_BITS = 6  # without a watermark, only a very close perceptual hash counts
WATERMARK_MAX_BITS = 4  # a read watermark within this many bits of the manifest's id is readable


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Context:
    """What every artwork is checked against: the trust anchor and either a bundle or the operator's ledger."""

    anchor_pem: str
    mode: str  # "bundle" | "workspace"
    bundle: object | None = None  # app.bundle.Bundle
    conn: object | None = None  # the ledger, read-only (workspace)
    lineage: bool = True
    log_problems: list[str] = field(default_factory=list)

    def anchor_description(self) -> str:
        """Which anchor, in words a reader of a handed-on report can check (no local path)."""
        source = (
            f"bundle {self.bundle.folder.name}/trust/ca.pem" if self.mode == "bundle" else "operator signing folder"
        )
        return f"{source}, {signed_json.anchor_description(self.anchor_pem)}"


def audit_paths(files: list[Path], lineage: bool = True, bundle: Path | None = None) -> list[dict]:
    """Audit artworks against a published bundle, or against the operator's workspace when `bundle` is None."""
    return audit_files(files, open_context(lineage=lineage, bundle=bundle))


def audit_files(files: list[Path], context: Context) -> list[dict]:
    """Audit artworks against an opened context (closed afterwards)."""
    try:
        return [audit_artwork(Path(f), context) for f in files]
    finally:
        if context.conn is not None:
            context.conn.close()


def open_context(lineage: bool = True, bundle: Path | None = None) -> Context:
    """The trust anchor and records to audit against. Raises BundleError, FileNotFoundError or PermissionError (a
    message for the user) when there is no usable anchor."""
    if bundle is not None:
        from app.bundle import open_bundle

        found = open_bundle(Path(bundle))
        return Context(
            found.anchor_pem, "bundle", bundle=found, lineage=False, log_problems=found.log_problems + found.problems
        )
    from provenance.keys import trust_anchor

    anchor = trust_anchor()
    conn = ledger.open_read_only()
    problems = [] if conn is None else _ledger_problems(conn)
    return Context(anchor, "workspace", conn=conn, lineage=lineage, log_problems=problems)


def report_meta(context: Context) -> dict:
    """The facts a report opens with: date, tool version, trust anchor and mode."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": f"Atelier {code_version()}",
        "anchor": context.anchor_description(),
        "mode": context.mode,
    }


# verdict -> (exit code, meaning); a run's exit code is its most serious verdict's, in this order
VERDICTS = {
    "tampered": (1, "the file's content credentials or pixels do not hold: changed or re-signed after signing"),
    "failed": (5, "the file holds, but a record about it does not (registry, DVC, policy), or it cannot be read"),
    "recovered": (3, "no content credentials; the provenance was found by watermark or perceptual hash: not verified"),
    "not_atelier": (4, "no content credentials and no match in the log: nothing says Atelier made it"),
    "verified": (0, "every check passed under the trust anchor"),
}
# checks about the records an artwork names (its file is not in question when only these fail)
RECORD_CHECKS = {"model in registry", "model not taken down", "training data known to DVC", "training licenses allowed"}


def exit_code(results: list[dict]) -> int:
    """The most serious verdict's exit code (VERDICTS' order); 0 when every file verified."""
    found = {r["status"] for r in results}
    return next((code for verdict, (code, _) in VERDICTS.items() if verdict in found), 0)


def audit_artwork(path: Path, context: Context) -> dict:
    """Audit one artwork file; return {path, status, summary, checks, notes, manifest, attribution, marking}."""
    try:
        creds = read_credentials(path, context.anchor_pem)
        image = Image.open(path)
        image.load()
    except (ValueError, OSError) as exc:
        return _result(path, "failed", f"unreadable: {exc}", [Check("readable", False, str(exc))])
    manifest = creds["atelier"]
    if creds["state"] is None:
        return _recovered(path, image, context)
    checks: list[Check] = []
    notes: list[str] = []
    state_ok = creds["state"] == "Trusted"
    codes = ", ".join(creds["codes"]) or creds.get("error") or "no failure codes"
    checks.append(
        Check(
            "C2PA signature and trust chain",
            state_ok,
            "Trusted: signed under the trust anchor" if state_ok else f"{creds['state']}: {codes}",
        )
    )
    attribution = None
    if manifest is None:
        checks.append(Check("Atelier assertion", False, "the content credentials hold no org.atelier.provenance"))
    else:
        sha = pixels_sha256(image)
        same = sha == manifest["artwork"]["sha256_pixels"]
        checks.append(
            Check(
                "hash binding",
                same,
                "pixels match the manifest's sha256"
                if same
                else f"pixels sha256 {sha[:16]}... differ from the manifest's",
            )
        )
        checks += _copies(path, manifest, notes)
        ingredient_checks, attribution = _ingredients(manifest, creds, context)
        checks += ingredient_checks
        checks.append(_record_check(manifest, context))
        binding = _soft_binding_check(creds, image, manifest, context, notes)
        if binding is not None:
            checks.append(binding)
        if context.lineage and context.mode == "workspace":
            checks += _lineage_checks(manifest)
    ok = all(c.ok for c in checks)
    failed = [c.name for c in checks if not c.ok]
    verdict = "verified" if ok else ("failed" if set(failed) <= RECORD_CHECKS else "tampered")
    return _result(
        path,
        verdict,
        "all checks passed, C2PA Trusted" if ok else f"{verdict}: {', '.join(failed)}",
        checks,
        notes,
        manifest,
        attribution,
        _marking(creds, image, manifest, context),
    )


def _result(
    path: Path,
    status: str,
    summary: str,
    checks: list[Check],
    notes: list[str] | None = None,
    manifest: dict | None = None,
    attribution: str | None = None,
    marking: dict | None = None,
) -> dict:
    return {
        "path": str(path),
        "status": status,
        "summary": summary,
        "checks": [asdict(c) for c in checks],
        "notes": notes or [],
        "manifest": manifest,
        "attribution": attribution,
        "marking": marking
        or {
            "c2pa_state": None,
            "signed_at": None,
            "trusted_timestamp": False,
            "watermark": None,
            "ai_disclosure": None,
            "logged": None,
        },
    }


def _copies(path: Path, manifest: dict, notes: list[str]) -> list[Check]:
    """The unsigned copies of the manifest (PNG text chunk, sidecar): a missing one is a note, a differing one fails
    and names the fields that differ."""
    checks = []
    embedded = read_manifest(path) if path.suffix.lower() == ".png" else None
    if embedded is None:
        notes.append("no unsigned text copy of the manifest in the file; the signed manifest is used")
    else:
        fields = differing_fields(manifest, embedded)
        checks.append(
            Check(
                "embedded text copy",
                not fields,
                "equals the signed manifest"
                if not fields
                else f"differs from the signed manifest in {', '.join(fields[:8])}",
            )
        )
    sidecar = path.with_name(f"{manifest['id']}.provenance.json")
    if not sidecar.exists():
        notes.append(
            f"no sidecar {sidecar.name} beside the file (renamed or copied alone); the embedded signed "
            "manifest is enough"
        )
        return checks
    try:
        copy = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        return checks + [Check("sidecar copy", False, f"{sidecar.name} is unreadable: {exc}")]
    fields = differing_fields(manifest, copy)
    return checks + [
        Check(
            "sidecar copy",
            not fields,
            f"{sidecar.name} agrees"
            if not fields
            else f"{sidecar.name} differs from the signed manifest in {', '.join(fields[:8])}",
        )
    ]


def differing_fields(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted paths of the fields where two JSON documents differ (e.g. `artwork.generator.prompt`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(where)
            else:
                out += differing_fields(a[key], b[key], where)
        return out
    return [] if a == b else [prefix or "(whole document)"]


def _ingredients(manifest: dict, creds: dict, context: Context) -> tuple[list[Check], str | None]:
    """The model credential, dataset card and attribution list the signed manifest embeds, each checked against the
    digests the manifest and the credential name, and (with a bundle) against the bundle's copies."""
    by_type: dict[str, dict] = {}
    for ingredient in creds.get("ingredients") or []:
        for kind in ingredient["data_types"]:
            if kind.startswith("c2pa.types.model"):
                by_type.setdefault("model", ingredient)
            elif kind == "c2pa.types.dataset":
                key = "attribution" if ingredient["format"] == "text/markdown" else "card"
                by_type.setdefault(key, ingredient)
    model, data = manifest["model"], manifest["data"]
    if "credential_sha256" not in model:
        return [
            Check(
                "model credential",
                False,
                f"the manifest ({manifest.get('schema')}) names no model "
                "credential: made before credentials (atelier.provenance/2)",
            )
        ], None
    problems, credential = [], None
    if by_type.get("model", {}).get("data") is None:
        problems.append("no model credential ingredient in the signed manifest")
    else:
        try:
            credential = json.loads(by_type["model"]["data"])
        except ValueError:
            problems.append("the model credential ingredient is not JSON")
    if credential is not None:
        problems += credentials.check(credential, context.anchor_pem, weights_sha256=model["weights_sha256"])
        if signed_json.digest(credential) != model["credential_sha256"]:
            problems.append("it is not the credential the manifest names (digest differs)")
        credited = credential.get("payload", {}).get("model", {})
        for key in ("components", "licensed_only", "licensed_only_reason"):
            if key in model and model[key] != credited.get(key):
                problems.append(f"the manifest's model.{key} differs from the model credential's")
        if context.bundle is not None:
            published = context.bundle.credentials.get((model["name"], str(model["version"])))
            if published is None:
                problems.append(f"the bundle has no credential for {model['name']} version {model['version']}")
            elif signed_json.digest(published) != signed_json.digest(credential):
                problems.append("it differs from the bundle's credential for this version")
    checks = [
        Check(
            "model credential",
            not problems,
            "; ".join(problems)
            if problems
            else f"signed under the anchor, names {model['name']} version {model['version']} with the manifest's "
            f"weights sha256 {model['weights_sha256'][:12]}...",
        )
    ]
    facts = (credential or {}).get("payload", {}).get("training_data", {})
    card = data.get("dataset_card") or {}
    checks.append(
        _document_check(
            "dataset card",
            card.get("sha256"),
            facts.get("dataset_card_sha256"),
            by_type.get("card"),
            card.get("embedded", False),
            None if context.bundle is None else context.bundle.cards,
        )
    )
    attribution = data["attribution"]
    checks.append(
        _document_check(
            "attribution list",
            attribution["sha256"],
            facts.get("attribution_sha256"),
            by_type.get("attribution"),
            attribution.get("embedded", False),
            None if context.bundle is None else context.bundle.attribution,
        )
    )
    text = None
    if by_type.get("attribution", {}).get("data") is not None:
        text = by_type["attribution"]["data"].decode("utf-8", errors="replace")
    elif context.bundle is not None:
        text = context.bundle.attribution.get(attribution["sha256"])
    return checks, text


def _document_check(
    name: str,
    expected: str | None,
    credited: str | None,
    ingredient: dict | None,
    embedded: bool,
    published: dict | None,
) -> Check:
    """One named document: the manifest's digest, the credential's digest, the embedded copy and the bundle's copy
    must all agree."""
    if expected is None:
        return Check(name, False, f"the manifest records no {name} digest")
    problems = []
    if credited is not None and credited != expected:
        problems.append(f"the model credential names another {name} ({credited[:12]}...)")
    if embedded:
        data = (ingredient or {}).get("data")
        if data is None:
            problems.append(f"the manifest says the {name} is embedded, but no such ingredient is there")
        elif hashlib.sha256(data).hexdigest() != expected:
            problems.append(f"the embedded {name} does not match the manifest's sha256")
    if published is not None and expected not in published:
        problems.append(f"the bundle has no {name} with sha256 {expected[:12]}...")
    where = ", ".join(w for w, on in (("embedded", embedded), ("in the bundle", published is not None)) if on)
    return Check(
        name,
        not problems,
        "; ".join(problems)
        if problems
        else f"sha256 {expected[:12]}... matches the manifest and the model credential ({where or 'by digest'})",
    )


def _soft_binding_check(
    creds: dict, image: Image.Image, manifest: dict, context: Context, notes: list[str]
) -> Check | None:
    """The signed soft binding (issue 20) against the manifest's watermark id, the id read from the pixels and the
    ledger row or log entry; None (with a note) when the artwork declares no binding (unmarked, or signed before)."""
    expected = (manifest["artwork"].get("watermark") or {}).get("id")
    binding = creds.get("soft_binding")
    if binding is None:
        if expected is not None:
            notes.append("the credentials declare no soft binding for the watermark (signed before issue 20)")
        return None
    try:
        declared = (
            watermark.id_from_binding(binding["blocks"][0]["value"]) if binding.get("alg") == watermark.ALG else None
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return Check("soft binding", False, f"the c2pa.soft-binding value is malformed ({exc})")
    if declared is None:
        return Check("soft binding", False, f"unknown soft-binding algorithm {binding.get('alg')!r}")
    problems = [] if declared == expected else [f"declares watermark id {declared}, the manifest {expected}"]
    read = watermark.read(image).id if min(image.size) >= watermark.MIN_READ else None
    if read is None:
        notes.append(f"the soft binding's watermark id {declared} could not be read from the pixels")
    elif read != declared:
        problems.append(f"the pixels carry watermark id {read}")
    row = (
        context.bundle.artworks.get(manifest["id"])
        if context.mode == "bundle"
        else ledger.get(context.conn, manifest["id"])
        if context.conn is not None
        else None
    )
    if isinstance(row, dict) and "watermark_id" in row and row["watermark_id"] != declared:
        problems.append(
            f"the {'log entry' if context.mode == 'bundle' else 'ledger row'} holds watermark id {row['watermark_id']}"
        )
    return Check(
        "soft binding",
        not problems,
        "; ".join(problems)
        if problems
        else f"watermark id {declared} declared, "
        + ("read from the pixels" if read is not None else "not read from the pixels (see notes)")
        + (", and recorded" if isinstance(row, dict) and "watermark_id" in row else ""),
    )


def _record_check(manifest: dict, context: Context) -> Check:
    """The artwork's entry in the signed public log (bundle) or its ledger row and log (workspace): present, equal to
    the signed manifest, and the log's chain and signed head intact (its problems name the entries)."""
    problems = []
    if context.mode == "bundle":
        name, where = "entry in the signed log", "the log's entry"
        found = context.bundle.artworks.get(manifest["id"])
        if found is None:
            problems.append(f"artwork {manifest['id']} has no entry in the bundle's log")
        else:
            found = found.get("manifest")
    else:
        name, where = "ledger copy", "the ledger row"
        row = None if context.conn is None else ledger.get(context.conn, manifest["id"])
        found = None if row is None else row["manifest"]
        if row is None:
            problems.append("no ledger row for this artwork" + (" (no ledger here)" if context.conn is None else ""))
    if found is not None and found != manifest:
        problems.append(
            f"{where} differs from the signed manifest in {', '.join(differing_fields(manifest, found)[:8])}"
        )
    if context.log_problems:
        problems.append("the log cannot be trusted: " + "; ".join(context.log_problems[:5]))
    return Check(
        name,
        not problems,
        "; ".join(problems)
        if problems
        else "present, equal to the signed manifest, and the log's chain and signed head verify",
    )


def _marking(creds: dict, image: Image.Image, manifest: dict | None, context: Context) -> dict:
    """The facts the marking checklist (EU AI Act Art. 50(2)) needs."""
    signer = creds.get("signer") or {}
    actions = creds.get("actions") or []
    disclosed = any(a.get("digitalSourceType") == DIGITAL_SOURCE_TYPE for a in actions)
    if manifest is not None:
        disclosed = disclosed and bool(manifest.get("rights", {}).get("ai_generated"))
    expected = ((manifest or {}).get("artwork", {}).get("watermark") or {}).get("id")
    method = ((manifest or {}).get("artwork", {}).get("watermark") or {}).get("method")
    mark = {"expected": expected, **watermark.check(image, expected, method, WATERMARK_MAX_BITS)}
    logged = None
    if manifest is not None and context.mode == "bundle":
        logged = manifest["id"] in context.bundle.artworks and not context.log_problems
    elif manifest is not None and context.conn is not None:
        row = ledger.get(context.conn, manifest["id"])
        logged = row is not None and row["manifest"] == manifest and not context.log_problems
    return {
        "c2pa_state": creds.get("state"),
        "signed_at": signer.get("time") or (manifest or {}).get("artwork", {}).get("created_at"),
        "trusted_timestamp": bool(signer.get("time")),
        "watermark": mark,
        "ai_disclosure": disclosed,
        "logged": logged,
    }


def _recovered(path: Path, image: Image.Image, context: Context) -> dict:
    """A copy without credentials: find it in the log (bundle) or ledger (workspace) by watermark, then phash."""
    if context.mode == "bundle":
        rows = [r for r in context.bundle.artworks.values() if isinstance(r, dict)]
        found, how = recover(
            image, lambda copy: _nearest_row(rows, copy), lambda h: _close_rows(rows, h, PHASH_ONLY_BITS)
        )
        where = "the bundle's signed log"
    elif context.conn is not None:
        conn = context.conn
        found, how = recover(
            image,
            lambda copy: ledger.by_mark(conn, copy),
            lambda h: ledger.by_phash(conn, h, max_distance=PHASH_ONLY_BITS),
        )
        where = "the ledger"
    else:
        found, how = None, "no ledger here to search"
        where = "the ledger"
    mark = {
        "c2pa_state": None,
        "signed_at": None,
        "trusted_timestamp": False,
        "ai_disclosure": None,
        "logged": found is not None,
        "watermark": {"expected": None, "read": None, "distance": None, "readable": None},
    }
    if found is None:
        return _result(
            path,
            "not_atelier",
            f"not an Atelier artwork as far as {where} knows: no content credentials and {how}",
            [
                Check("content credentials", False, "no C2PA manifest in the file"),
                Check(f"recovery from {where}", False, how),
            ],
            marking=mark,
        )
    manifest = found["manifest"]
    expected = manifest["artwork"]["watermark"]["id"]
    if expected is not None:
        method = manifest["artwork"]["watermark"].get("method")
        mark["watermark"] = {"expected": expected, **watermark.check(image, expected, method, WATERMARK_MAX_BITS)}
    same = pixels_sha256(image) == manifest["artwork"]["sha256_pixels"]
    checks = [
        Check("content credentials", False, "no C2PA manifest in the file (stripped or re-encoded)"),
        Check(f"recovery from {where}", True, f"provenance of artwork {found['id']} recovered by {how}"),
        Check(
            "pixels as recorded",
            same,
            "the pixels are the recorded artwork's (only the credentials are gone)"
            if same
            else "the pixels differ from the recorded artwork's: edited, resized or re-encoded since",
        ),
    ]
    if context.log_problems:
        checks.append(Check("log integrity", False, "; ".join(context.log_problems[:5])))
    if context.lineage and context.mode == "workspace":
        checks += _lineage_checks(manifest)
    return _result(
        path,
        "recovered",
        f"not verified; provenance recovered from {where} by {how}"
        + ("" if same else "; the pixels differ from the recorded artwork's"),
        checks,
        manifest=manifest,
        marking=mark,
    )


def recover(
    image: Image.Image, by_watermark: Callable[[Image.Image], dict | None], by_phash: Callable[[str], list[dict]]
) -> tuple[dict | None, str]:
    """The record of a stripped or re-encoded copy: a version 2 watermark's exact id (its CRC and code already rule
    out noise, and a crop changes the perceptual hash), or a clear version 1 match confirmed by perceptual hash,
    else a unique, very close perceptual hash; (record, how it was found) or (None, why not)."""
    h = phash(image)
    found = by_watermark(image.convert("RGB"))
    if found is not None:
        distance = phash_distance(h, found["phash"])
        if found["match"].get("margin") is None:  # version 2: decoded exactly
            return found, f"watermark id {found['watermark_id']} (decoded exactly; perceptual hash {distance} bits)"
        if distance <= PHASH_CONFIRM_BITS:
            return found, (
                f"watermark id {found['watermark_id']} ({found['match']['distance']} bits off), "
                f"confirmed by perceptual hash ({distance} bits)"
            )
    close = by_phash(h)
    if len(close) == 1 or (len(close) > 1 and close[0]["distance"] < close[1]["distance"]):
        return close[0], f"perceptual hash only ({close[0]['distance']} bits), no watermark match"
    return None, "no watermark or perceptual-hash match"


def _nearest_row(rows: list[dict], image: Image.Image) -> dict | None:
    """The log entry whose watermark id `image` carries (as ledger.by_mark): a version 2 mark's exact id, else the
    clear, unique nearest version 1 id (entries whose manifest names method dwtDctSvd)."""

    def method(r: dict) -> str | None:
        return ((r.get("manifest") or {}).get("artwork", {}).get("watermark") or {}).get("method")

    v1 = [
        int(r["watermark_id"]) for r in rows if r.get("watermark_id") is not None and method(r) == watermark.METHOD_V1
    ]
    found = watermark.identify(image, lambda: v1)
    row = next((r for r in rows if found.id is not None and r.get("watermark_id") == found.id), None)
    if row is None:
        return None
    return row | {"match": {"distance": found.distance, "margin": found.margin}}


def _close_rows(rows: list[dict], h: str, max_distance: int) -> list[dict]:
    """Log entries within `max_distance` bits of perceptual hash `h`, nearest first (as ledger.by_phash)."""
    close = [r | {"distance": phash_distance(h, r["phash"])} for r in rows if r.get("phash")]
    return sorted((r for r in close if r["distance"] <= max_distance), key=lambda r: (r["distance"], r["id"]))


def _ledger_problems(conn) -> list[str]:
    """The operator's ledger checked against its own hash chain (edited, reordered or deleted entries)."""
    from provenance import publiclog

    return publiclog.verify_ledger(conn)


def _lineage_checks(m: dict) -> list[Check]:
    """The model version is registered with the recorded weights; DVC knows the data; the policy allows every record."""
    from atelier.config import load_params
    from atelier.lineage import training_rows, where_md5_is_recorded
    from atelier.rights import decide, read_opt_outs
    from registry import lookup

    checks = []
    model = m["model"]
    try:
        version = lookup.get_version(model["name"], model["version"])
        tags = version["tags"]
        same = tags.get("weights_sha256") == model["weights_sha256"] and version["run_id"] == model["run_id"]
        checks.append(
            Check(
                "model in registry",
                same,
                f"{model['name']} v{model['version']} registered"
                + (
                    " with the recorded weights digest and run"
                    if same
                    else f" but its weights digest/run differ ({tags.get('weights_sha256')}, {version['run_id']})"
                ),
            )
        )
        if tags.get("takedown"):
            checks.append(Check("model not taken down", False, f"takedown recorded: {tags['takedown']}"))
    except LookupError as exc:
        checks.append(Check("model in registry", False, str(exc)))
    md5 = m["data"]["dvc_md5"]
    where = where_md5_is_recorded(md5)
    checks.append(
        Check(
            "training data known to DVC",
            where is not None,
            f"md5 {md5} found in {where}"
            if where
            else f"md5 {md5} is in neither dvc.lock, its git history nor the DVC cache",
        )
    )
    try:
        records = training_rows(md5)
    except FileNotFoundError as exc:
        checks.append(Check("training licenses allowed", False, str(exc)))
        return checks
    policy, opt_outs = load_params().license.policy, read_opt_outs(paths.OPT_OUT)
    refused = [
        (r["record_id"][:12], d["reason"]) for r in records if (d := decide(r, policy, opt_outs))["decision"] != "train"
    ]
    checks.append(
        Check(
            "training licenses allowed",
            not refused,
            f"all {len(records)} training records allowed by the policy and opt-outs in force"
            if not refused
            else f"{len(refused)} training records are not allowed now, e.g. {refused[:3]}",
        )
    )
    return checks
