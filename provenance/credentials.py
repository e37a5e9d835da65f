"""Model credentials: a signed statement, per registered model version, of what the model is and what trained it.

The payload names the version (name, number, run id, backend), the sha256 of its weights, and its training data: the
DVC md5 of the training set, the sha256 of its dataset card (Croissant) and of its attribution list, the record count
and the count per licence, plus a base model when there is one (`null`: Atelier trains every component itself), every
part of the model (`components`: trained here, or declared in params.yaml with its licence, training data and
computed weights digest; atelier/components.py) and the `licensed_only` verdict over them with its reason. It is
signed with the operator's signing identity (provenance/signed_json.py), made once per version, kept as the run artifact
`credential/model-credential.json`, embedded as an ingredient in every artwork the version makes, and published in the
bundle. Anyone holding the CA certificate can check it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from atelier import components
from atelier.io import write_json
from provenance import signed_json
from provenance.keys import SigningIdentity

SCHEMA = "atelier.model-credential/1"
ARTIFACT = "credential/model-credential.json"  # on the version's training run
FILE_NAME = "model-credential.json"


def payload(info: dict, license_summary: dict, attribution_sha256: str, code_version: str) -> dict:
    """The credential's payload for a registered version (`info`: name, version, run_id, tags)."""
    tags = info["tags"]
    parts = components.from_tag(tags["components"]) if "components" in tags else None  # None: registered before
    base = next((p["name"] for p in parts or [] if p["role"] == "base_model"), None)
    return {
        "schema": SCHEMA,
        "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": info["name"],
            "version": str(info["version"]),
            "run_id": info["run_id"],
            "backend": tags.get("backend", "latent-diffusion"),
            "weights_sha256": tags["weights_sha256"],
            "base_model": base or tags.get("base_model.name") or tags.get("base_model") or None,
            **_component_facts(parts),
        },
        "training_data": {
            "dvc_md5": tags["dataset_md5"],
            "records": int(tags["train_records"]),
            "dataset_card_sha256": tags.get("dataset_card_sha256") or None,
            "attribution_sha256": attribution_sha256,
            "per_license": dict(sorted(license_summary["train_per_license"].items())),
        },
        "code_version": code_version,
    }


def _component_facts(parts: list[dict] | None) -> dict:
    """components, licensed_only and licensed_only_reason for the credential's model (none for an older version)."""
    if parts is None:
        return {}
    verdict, reason = components.licensed_only(parts)
    return {"components": parts, "licensed_only": verdict, "licensed_only_reason": reason}


def manifest_facts(credential: dict) -> dict:
    """What an artwork's manifest copies from its model credential into `model`: components, licensed_only and its
    reason (nothing for a credential made before components were recorded)."""
    model = credential["payload"]["model"]
    return {k: model[k] for k in ("components", "licensed_only", "licensed_only_reason") if k in model}


def check(document: dict, anchor_pem: str, *, weights_sha256: str | None = None) -> list[str]:
    """Problems with a model credential: its signature under `anchor_pem`, its schema, and (when given) that it names
    these weights."""
    problems = signed_json.verify(document, anchor_pem)
    body = document.get("payload") if isinstance(document, dict) else None
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        return problems + [f"not a model credential (schema {SCHEMA})"]
    if weights_sha256 is not None and body["model"]["weights_sha256"] != weights_sha256:
        problems.append(f"names weights {body['model']['weights_sha256'][:16]}..., not {weights_sha256[:16]}...")
    return problems


def ensure(
    info: dict,
    license_summary: dict,
    attribution_sha256: str,
    code_version: str,
    identity: SigningIdentity,
    cache: Path,
) -> dict:
    """The version's credential: the cached copy, else the one on its training run, else a new one, signed and logged
    to the run (made once per version, so every artwork of the version embeds the same credential)."""
    from registry import tracking

    anchor = identity.ca_pem()
    target = cache / FILE_NAME
    for attempt in ("cache", "run"):
        if attempt == "run":
            try:
                tracking.download_run_file(info["run_id"], ARTIFACT, cache / "run")
                found = cache / "run" / ARTIFACT
            except Exception:  # noqa: BLE001 (MLflow raises several kinds): the version has no credential yet
                continue
        else:
            found = target
        if found.exists():
            document = json.loads(found.read_text(encoding="utf-8"))
            if not check(document, anchor, weights_sha256=info["tags"]["weights_sha256"]):
                if found != target:
                    write_json(target, document)
                return document
    document = signed_json.sign(payload(info, license_summary, attribution_sha256, code_version), identity)
    write_json(target, document)
    tracking.log_run_file(info["run_id"], target, "credential")
    return document
