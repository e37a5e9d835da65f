"""C2PA content credentials for an artwork PNG, with c2pa-python 0.38 (offline, local certificates).

The signed claim holds these assertions, all listed in `created_assertion_labels` so they are attributed to the
signer: `c2pa.actions` (a `c2pa.created` action, digital source type `trainedAlgorithmicMedia`, then, for a marked
artwork, a `c2pa.watermarked.bound` action), `cawg.training-mining` (the artwork's own terms for AI training and data
mining), `org.atelier.provenance` (the Atelier provenance manifest) and, for a marked artwork, `c2pa.soft-binding`
(its watermark: algorithm `watermark.ALG`, Atelier's own identifier, not on the C2PA soft binding algorithm list; one
block of scope {} (the whole image) whose value is the watermark id as base64 of 8 big-endian bytes). An artwork
without a mark has neither. C2PA 2.2 wants `c2pa.created` first among the actions, so the watermark action follows
it; the watermark is embedded before the pixels are hashed and signed. No thumbnail; no remote manifest fetching;
verify-after-sign stays on.

A C2PA reader whose SDK checks soft binding algorithms against a configured list (c2pa-rs since mid 2026; 0.38's
does not) should list `watermark.ALG` in its `soft_binding.soft_binding_algorithms` setting, as read_credentials does.

Sign last: any change to the file after signing (one pixel) invalidates it, and a re-save strips it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import c2pa
from PIL import Image

from atelier.hashing import pixels_sha256
from atelier.io import write_bytes
from provenance import watermark
from provenance.keys import SigningIdentity
from provenance.manifest import DIGITAL_SOURCE_TYPE, validate

ATELIER_LABEL = "org.atelier.provenance"
ACTIONS_LABEL = "c2pa.actions"  # the SDK writes it as c2pa.actions.v2: match labels by prefix
TRAINING_MINING_LABEL = "cawg.training-mining"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
WATERMARKED_ACTION = "c2pa.watermarked.bound"
TRAINING_MINING_ENTRIES = ("cawg.ai_generative_training", "cawg.ai_training", "cawg.data_mining", "cawg.ai_inference")
USES = ("allowed", "notAllowed", "constrained")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SIGN_SETTINGS = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_after_sign": True},
    "builder": {
        "thumbnail": {"enabled": False},
        "created_assertion_labels": [ACTIONS_LABEL, TRAINING_MINING_LABEL, ATELIER_LABEL, SOFT_BINDING_LABEL],
    },
}
READ_SETTINGS = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "soft_binding": {"soft_binding_algorithms": [watermark.ALG]},
}


def artwork_terms(manifest: dict) -> dict:
    """The artwork's own training and mining terms (`cawg.training-mining` entries).

    Training a model (generative or not) on the artwork, or mining it, is `notAllowed`: the artwork inherits the
    obligations of the licensed works that trained its model (attribution, share-alike, non-commercial), and a
    training set cannot carry them forward, so allowing it would launder those terms. Inference (using the artwork as
    a model's input, e.g. captioning or moderation) is `constrained` by the usage terms stated in the manifest.
    """
    statement = manifest["rights"]["usage_terms"]["statement"]
    return {
        "cawg.ai_generative_training": {"use": "notAllowed"},
        "cawg.ai_training": {"use": "notAllowed"},
        "cawg.data_mining": {"use": "notAllowed"},
        "cawg.ai_inference": {"use": "constrained", "constraint_info": statement},
    }


@dataclass(frozen=True)
class Ingredient:
    """A document the artwork's claim embeds and hashes as a C2PA v3 ingredient (e.g. the model credential)."""

    title: str
    format: str  # MIME type of `data`
    relationship: str  # parentOf | componentOf | inputTo
    data_type: str  # e.g. c2pa.types.model.pytorch, c2pa.types.dataset
    data: bytes
    identifier: str  # a resource name, unique within the manifest


def soft_binding(manifest: dict) -> dict | None:
    """The `c2pa.soft-binding` assertion data declaring the artwork's watermark, or None when it carries no mark."""
    wm_id = (manifest["artwork"].get("watermark") or {}).get("id")
    if wm_id is None:
        return None
    return {
        "alg": watermark.ALG,
        "blocks": [{"scope": {}, "value": watermark.binding_value(int(wm_id))}],
        "name": "Atelier's own invisible watermark (a Reed-Solomon coded id in 8x8 DCT blocks of luma and "
        "chroma), not on the C2PA algorithm list: the value is the artwork's ledger watermark id, 8 bytes "
        "big-endian, base64",
        "bindingMetadata": {
            "description": "Resolve with the Atelier ledger's resolution service "
            "(atelier resolve serve: the C2PA Soft Binding Resolution API)"
        },
    }


def manifest_definition(manifest: dict, terms: dict, ingredients: tuple[Ingredient, ...] = ()) -> dict:
    """The C2PA manifest definition (title, claim generator, assertions, ingredients) for one artwork."""
    rights = manifest["rights"]
    model = manifest["model"]
    agent = {"name": "Atelier", "version": rights["code_version"]}
    actions = [
        {
            "action": "c2pa.created",
            "digitalSourceType": DIGITAL_SOURCE_TYPE,
            "softwareAgent": agent,
            "description": f"{rights['disclosure']} Model: {model['name']} version {model['version']}.",
        }
    ]
    binding = soft_binding(manifest)
    if binding is not None:  # c2pa.created stays first (C2PA 2.2); the mark was embedded before signing
        actions.append(
            {
                "action": WATERMARKED_ACTION,
                "softwareAgent": agent,
                "description": "An invisible watermark carrying the artwork's ledger id was embedded in "
                "the pixels; the c2pa.soft-binding assertion declares it.",
                "parameters": {"alg": binding["alg"]},
            }
        )
    return {
        "title": manifest["artwork"]["file"],
        "format": "image/png",
        "claim_generator_info": [agent],
        "assertions": [
            {"label": ACTIONS_LABEL, "data": {"actions": actions}},
            {"label": TRAINING_MINING_LABEL, "data": {"entries": terms}},
            {"label": ATELIER_LABEL, "data": manifest},
        ]
        + ([{"label": SOFT_BINDING_LABEL, "data": binding}] if binding is not None else []),
        "ingredients": [
            {
                "title": i.title,
                "format": i.format,
                "relationship": i.relationship,
                "data_types": [{"type": i.data_type}],
                "data": {"format": i.format, "identifier": i.identifier},
            }
            for i in ingredients
        ],
    }


def sign_png(
    png_bytes: bytes, manifest: dict, identity: SigningIdentity, terms: dict, ingredients: tuple[Ingredient, ...] = ()
) -> bytes:
    """PNG bytes with embedded, signed content credentials for `manifest` (which must describe these pixels); each
    ingredient's document is embedded in the manifest store and covered by the signature."""
    if not png_bytes.startswith(PNG_SIGNATURE):
        raise ValueError(f"artwork {manifest.get('id')}: expected PNG bytes to sign")
    validate(manifest)
    _check_terms(terms)
    with Image.open(io.BytesIO(png_bytes)) as img:
        sha = pixels_sha256(img)
    if sha != manifest["artwork"]["sha256_pixels"]:
        raise ValueError(
            f"artwork {manifest['id']}: the manifest's sha256_pixels does not match the PNG's pixels "
            f"({sha}); embed the watermark before hashing, and sign the very pixels described"
        )
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain.read_bytes(), identity.key.read_bytes(), None)
    signed = io.BytesIO()
    with (
        c2pa.Context.from_dict(SIGN_SETTINGS) as context,
        c2pa.Signer.from_info(info) as signer,
        c2pa.Builder(manifest_definition(manifest, terms, ingredients), context=context) as builder,
    ):
        for ingredient in ingredients:
            builder.add_resource(ingredient.identifier, io.BytesIO(ingredient.data))
        builder.sign(signer, "image/png", io.BytesIO(png_bytes), signed)
    return signed.getvalue()


def write_signed(
    path: Path,
    png_bytes: bytes,
    manifest: dict,
    identity: SigningIdentity,
    terms: dict,
    ingredients: tuple[Ingredient, ...] = (),
) -> None:
    """Sign in memory, then write `path` atomically (temp file + rename); if signing raises, nothing is written."""
    write_bytes(Path(path), sign_png(png_bytes, manifest, identity, terms, ingredients))


def read_credentials(source: Path | str | bytes, trust_anchor_pem: str | None = None) -> dict:
    """What a C2PA reader sees in a file or bytes: validation state, failure codes, the Atelier assertions and the
    soft binding (`soft_binding`: the c2pa.soft-binding data, or None).

    `state` is "Trusted" (valid and signed under `trust_anchor_pem`), "Valid" (intact, signer not trusted), "Invalid"
    (tampered or malformed), or None when there is no manifest. `codes` lists the failure codes, e.g.
    `assertion.dataHash.mismatch` or `signingCredential.untrusted`; `error` holds the SDK's message when the manifest
    store is too broken to parse (state "Invalid", no codes). Raises ValueError when the file itself is unreadable.
    The assertions are returned whatever the state: believe them only when the state is "Trusted".
    """
    name = str(source) if isinstance(source, (str, Path)) else "<bytes>"
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    settings = dict(READ_SETTINGS)
    if trust_anchor_pem:
        settings["trust"] = {"user_anchors": trust_anchor_pem}
    result = {
        "state": None,
        "codes": [],
        "atelier": None,
        "actions": None,
        "training_mining": None,
        "signer": None,
        "manifest_label": None,
        "error": None,
        "ingredients": [],
        "soft_binding": None,
    }
    with c2pa.Context.from_dict(settings) as context:
        try:
            reader = c2pa.Reader.try_create(_mime_type(data), io.BytesIO(data), None, context)
        except c2pa.C2paError.Verify as e:  # a manifest is there but its structure is broken
            return result | {"state": "Invalid", "error": str(e)}
        except c2pa.C2paError as e:
            raise ValueError(f"{name}: not a readable asset ({e})") from e
        if reader is None:
            return result
        with reader:
            store = json.loads(reader.json())
            active = reader.get_active_manifest() or {}
            results = (reader.get_validation_results() or {}).get("activeManifest")
            failures = results.get("failure", []) if results is not None else store.get("validation_status") or []
            result.update(
                state=reader.get_validation_state(),
                codes=sorted({f["code"] for f in failures}),
                signer=active.get("signature_info"),
                manifest_label=store.get("active_manifest"),
                ingredients=[_ingredient(reader, i) for i in active.get("ingredients", [])],
            )
    assertions = active.get("assertions", [])
    result["atelier"] = _assertion(assertions, ATELIER_LABEL)
    result["actions"] = (_assertion(assertions, ACTIONS_LABEL) or {}).get("actions")
    result["training_mining"] = (_assertion(assertions, TRAINING_MINING_LABEL) or {}).get("entries")
    result["soft_binding"] = _assertion(assertions, SOFT_BINDING_LABEL)
    return result


def _ingredient(reader: c2pa.Reader, ingredient: dict) -> dict:
    """An ingredient as read: title, format, relationship, data types and its embedded document's bytes (or None)."""
    data = None
    identifier = (ingredient.get("data") or {}).get("identifier")
    if identifier:
        out = io.BytesIO()
        try:
            reader.resource_to_stream(identifier, out)
            data = out.getvalue()
        except c2pa.C2paError:
            data = None
    return {
        "title": ingredient.get("title"),
        "format": ingredient.get("format"),
        "relationship": ingredient.get("relationship"),
        "data_types": [t.get("type") for t in ingredient.get("data_types") or []],
        "data": data,
    }


def _assertion(assertions: list[dict], label: str) -> dict | None:
    """Data of the first assertion whose label is `label`, a versioned `label.vN` or an instance `label__N`."""
    for a in assertions:
        if a["label"] == label or a["label"].startswith((f"{label}.", f"{label}__")):
            return a.get("data")
    return None


def _check_terms(terms: dict) -> None:
    missing = [e for e in TRAINING_MINING_ENTRIES if e not in terms]
    bad = {k: v for k, v in terms.items() if not isinstance(v, dict) or v.get("use") not in USES}
    if missing or bad:
        raise ValueError(
            f"training-mining terms must state every entry {list(TRAINING_MINING_ENTRIES)} with a `use` "
            f"in {list(USES)}; missing {missing}, malformed {bad}"
        )


def _mime_type(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None  # let the SDK detect it
