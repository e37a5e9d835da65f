"""Signed documents and model credentials: anyone with the CA certificate can check them; an edit, a foreign signer
or a credential for other weights is caught. The credential rides in the artwork's C2PA manifest as an ingredient that
c2pa-python's own Reader finds, with no Atelier code."""

from __future__ import annotations

import copy
import hashlib
import io
import json

import c2pa
import pytest

from provenance import credentials, signed_json
from provenance.keys import create_signing_identity
from provenance.png import png_with_manifest
from provenance.signing import Ingredient, artwork_terms, read_credentials, sign_png
from tests.test_provenance_signing import artwork, manifest_for

INFO = {
    "name": "atelier-latent-diffusion",
    "version": "4",
    "run_id": "a" * 32,
    "tags": {
        "weights_sha256": "b" * 64,
        "dataset_md5": "c" * 32 + ".dir",
        "train_records": "120",
        "dataset_card_sha256": "d" * 64,
        "backend": "latent-diffusion",
    },
}
SUMMARY = {"train_per_license": {"CC0-1.0": 80, "CC-BY-4.0": 40}}


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return create_signing_identity(tmp_path_factory.mktemp("keys") / "signing", "Operator")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    return create_signing_identity(tmp_path_factory.mktemp("stranger") / "signing", "Someone Else")


@pytest.fixture(scope="module")
def credential(identity):
    return signed_json.sign(credentials.payload(INFO, SUMMARY, "e" * 64, "abc123"), identity)


def test_a_credential_verifies_with_the_ca_certificate_alone(identity, credential):
    assert credentials.check(credential, identity.ca_pem(), weights_sha256="b" * 64) == []
    body = credential["payload"]
    assert body["model"]["weights_sha256"] == "b" * 64 and body["model"]["base_model"] is None
    assert body["training_data"]["dataset_card_sha256"] == "d" * 64
    assert "PRIVATE KEY" not in json.dumps(credential)


def test_an_edited_credential_is_caught(identity, credential):
    edited = copy.deepcopy(credential)
    edited["payload"]["training_data"]["records"] = 121
    assert any("changed after signing" in p for p in credentials.check(edited, identity.ca_pem()))


def test_a_credential_for_other_weights_is_caught(identity, credential):
    problems = credentials.check(credential, identity.ca_pem(), weights_sha256="f" * 64)
    assert problems and "names weights" in problems[0]


def test_a_foreign_signer_is_caught(identity, stranger):
    forged = signed_json.sign(credentials.payload(INFO, SUMMARY, "e" * 64, "abc123"), stranger)
    problems = credentials.check(forged, identity.ca_pem())
    assert any("not issued by the trust anchor" in p and "Someone Else" in p for p in problems)


def test_garbage_is_a_problem_not_a_crash(identity):
    for doc in (
        {},
        {"payload": {}, "signature": {"alg": "ES256", "value": "!!", "certificate_chain": "x"}},
        {"payload": {}, "signature": {"alg": "none"}},
    ):
        assert credentials.check(doc, identity.ca_pem())


def test_plain_c2pa_reader_finds_the_model_credential_ingredient(identity, credential):
    image = artwork()
    manifest = manifest_for(image)
    data = signed_json.canonical(credential)
    card = b'{"@type": "sc:Dataset"}'
    png = sign_png(
        png_with_manifest(image, manifest),
        manifest,
        identity,
        artwork_terms(manifest),
        (
            Ingredient(
                "model credential",
                "application/json",
                "inputTo",
                "c2pa.types.model.pytorch",
                data,
                "model-credential.json",
            ),
            Ingredient("dataset card", "application/ld+json", "inputTo", "c2pa.types.dataset", card, "croissant.json"),
        ),
    )
    # c2pa-python alone: no Atelier code reads the ingredient
    settings = {"verify": {"remote_manifest_fetch": False}, "trust": {"user_anchors": identity.ca_pem()}}
    with (
        c2pa.Context.from_dict(settings) as context,
        c2pa.Reader("image/png", io.BytesIO(png), None, context) as reader,
    ):
        assert reader.get_validation_state() == "Trusted"
        store = json.loads(reader.json())
        ingredients = store["manifests"][store["active_manifest"]]["ingredients"]
        model = [i for i in ingredients if {"type": "c2pa.types.model.pytorch"} in i["data_types"]]
        assert len(model) == 1 and model[0]["relationship"] == "inputTo"
        out = io.BytesIO()
        reader.resource_to_stream(model[0]["data"]["identifier"], out)
    assert json.loads(out.getvalue()) == credential
    # and Atelier's reader hands back the same bytes
    read = read_credentials(png, identity.ca_pem())
    assert [i["data"] for i in read["ingredients"]] == [data, card]
    assert hashlib.sha256(read["ingredients"][1]["data"]).hexdigest() == hashlib.sha256(card).hexdigest()


PARTS = [
    {
        "name": "atelier-unet",
        "role": "unet",
        "trained_here": True,
        "weights_sha256": "1" * 64,
        "license": None,
        "training_data": "the licensed set (dataset card sha256 " + "d" * 64 + ")",
        "training_data_licensed": True,
    },
    {
        "name": "tiny-clip",
        "role": "clip",
        "trained_here": False,
        "weights_sha256": "2" * 64,
        "license": "MIT",
        "training_data": "web image-text pairs",
        "training_data_licensed": None,
    },
]


def test_the_credential_carries_the_components_and_the_manifest_copies_them(identity):
    from atelier import components

    info = copy.deepcopy(INFO)
    info["tags"]["components"] = components.as_tag(PARTS)
    document = signed_json.sign(credentials.payload(info, SUMMARY, "e" * 64, "abc123"), identity)
    assert credentials.check(document, identity.ca_pem(), weights_sha256="b" * 64) == []
    model = document["payload"]["model"]
    assert model["components"] == PARTS and model["licensed_only"] is False
    assert "clip 'tiny-clip'" in model["licensed_only_reason"] and "unknown" in model["licensed_only_reason"]
    facts = credentials.manifest_facts(document)
    assert facts == {"components": PARTS, "licensed_only": False, "licensed_only_reason": model["licensed_only_reason"]}
    edited = copy.deepcopy(document)
    edited["payload"]["model"]["licensed_only"] = True  # a claim changed after signing is caught
    assert credentials.check(edited, identity.ca_pem())


def test_a_credential_made_before_components_gives_the_manifest_nothing_to_copy(credential):
    assert "components" not in credential["payload"]["model"] and credentials.manifest_facts(credential) == {}
