"""Reservations inside the image bytes (provenance/reservations.py) for every source kind: C2PA/CAWG training-mining
assertions signed for real with the test identity, XMP plus:DataMining, noai metadata; a broken manifest fails
closed; an image without metadata passes. Through the real ingest (and clean's reject table)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from atelier.config import CleanParams, FolderSourceParams, ParquetSourceParams, ShardSourceParams
from provenance.reservations import C2PA_STORE_UUID, noai_marker, reservation
from stages.clean import clean_records
from stages.ingest import ingest_source
from tests.conftest import sign_with_training_mining

TM_ENTRIES = ("cawg.ai_generative_training", "cawg.ai_training", "cawg.data_mining", "cawg.ai_inference")


def picture(colour: tuple[int, int, int], size: int = 40) -> Image.Image:
    """A picture of its own (seeded noise), so that no two test images are near duplicates of each other."""
    rng = np.random.default_rng(list(colour))
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def png(colour=(10, 20, 30), size=40, text: dict | None = None, exif: dict | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    image = picture(colour, size)
    kwargs = {"pnginfo": info}
    if exif:
        e = Image.Exif()
        e.update(exif)
        kwargs["exif"] = e.tobytes()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def jpeg(colour=(200, 100, 50), xmp: bytes | None = None, exif: dict | None = None, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    kwargs = {"quality": 90}
    if exif:
        e = Image.Exif()
        e.update(exif)
        kwargs["exif"] = e.tobytes()
    if comment:
        kwargs["comment"] = comment
    picture(colour).save(buf, "JPEG", **kwargs)
    data = buf.getvalue()
    if xmp is not None:  # an APP1 XMP segment right after SOI, as Adobe writes it
        body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        data = data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]
    return data


signed = sign_with_training_mining  # the test identity's signature, with a training-and-mining assertion


def terms(use: str, **overrides: str) -> dict:
    return {e: {"use": overrides.get(e.split(".")[1], use)} for e in TM_ENTRIES}


def xmp_packet(
    data_mining: str | None = None, subject: list[str] = (), description: str = "", as_element: bool = False
) -> bytes:
    dm = "" if data_mining is None or as_element else f' plus:DataMining="{data_mining}"'
    element = f'<plus:DataMining rdf:resource="{data_mining}"/>' if as_element and data_mining else ""
    bag = "".join(f"<rdf:li>{s}</rdf:li>" for s in subject)
    desc = (
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
        if description
        else ""
    )
    return (
        f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" '
        f'xmlns:dc="http://purl.org/dc/elements/1.1/"{dm}>{element}'
        f"{'<dc:subject><rdf:Bag>' + bag + '</rdf:Bag></dc:subject>' if bag else ''}{desc}"
        f'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def ext(data: bytes) -> str:
    return "png" if data.startswith(b"\x89PNG") else "jpg"


def reason(error: str | None) -> str | None:
    return None if error is None else error.partition(": ")[0]


def corrupted(data: bytes) -> bytes:
    """The manifest store's claim damaged in the middle (the JUMBF boxes still say a store is there)."""
    i = data.find(C2PA_STORE_UUID) + 600
    return data[:i] + b"\x00" * 8 + data[i + 8 :]


@pytest.fixture(scope="module")
def works() -> dict[str, bytes]:
    """One image per case, each a different picture (so no two share a record id)."""
    dmi = "http://ns.useplus.org/ldf/vocab/"
    w = {
        "cawg_not_allowed": signed(png((1, 2, 3)), "cawg.training-mining", terms("notAllowed")),
        "cawg_allowed": signed(png((4, 5, 6)), "cawg.training-mining", terms("allowed")),
        "cawg_constrained": signed(
            png((7, 8, 9)), "cawg.training-mining", terms("allowed", ai_generative_training="constrained")
        ),
        "c2pa_not_allowed_jpeg": signed(
            jpeg((9, 90, 9)), "c2pa.training-mining", {"c2pa.ai_training": {"use": "notAllowed"}}, "image/jpeg"
        ),
        "xmp_prohibited": jpeg((20, 30, 40), xmp=xmp_packet(dmi + "DMI-PROHIBITED")),
        "xmp_genai": jpeg((21, 30, 40), xmp=xmp_packet(dmi + "DMI-PROHIBITED-GENAIMLTRAINING", as_element=True)),
        "xmp_allowed": jpeg((22, 30, 40), xmp=xmp_packet(dmi + "DMI-ALLOWED", subject=["sunset", "no AI used"])),
        "xmp_noai_keyword": jpeg((23, 30, 40), xmp=xmp_packet(subject=["landscape", "NoAI"])),
        "png_text_noai": png((30, 31, 32), text={"Comment": "noindex, noimageai"}),
        "png_text_prose": png((33, 34, 35), text={"Description": "Painted without AI by Noaidi; no AI was used"}),
        "exif_noai": jpeg((40, 41, 42), exif={0x010E: "Harbour at dawn #NoAI"}),
        "jpeg_comment_prose": jpeg((43, 44, 45), comment=b"https://example.org/noai/harbour.jpg"),
        "plain_png": png((50, 60, 70)),
        "plain_jpeg": jpeg((80, 90, 100)),
    }
    w["corrupted"] = corrupted(w["cawg_allowed"])
    return w


EXPECTED = {
    "cawg_not_allowed": "opted_out:c2pa_training_mining",
    "cawg_allowed": None,
    "cawg_constrained": "opted_out:c2pa_training_mining",
    "c2pa_not_allowed_jpeg": "opted_out:c2pa_training_mining",
    "xmp_prohibited": "opted_out:xmp_data_mining",
    "xmp_genai": "opted_out:xmp_data_mining",
    "xmp_allowed": None,
    "xmp_noai_keyword": "opted_out:noai_metadata",
    "png_text_noai": "opted_out:noai_metadata",
    "png_text_prose": None,
    "exif_noai": "opted_out:noai_metadata",
    "jpeg_comment_prose": None,
    "plain_png": None,
    "plain_jpeg": None,
    "corrupted": "rights_undetermined:c2pa_unreadable",
}


def test_reservation_reads_each_kind_of_metadata(works):
    for name, data in works.items():
        assert reason(reservation(data, name)) == EXPECTED[name], (name, reservation(data, name))
    assert "'cawg.ai_generative_training' is 'constrained'" in reservation(works["cawg_constrained"], "x")
    assert "DMI-PROHIBITED-GENAIMLTRAINING" in reservation(works["xmp_genai"], "x")
    assert "'#NoAI' in its EXIF ImageDescription" in reservation(works["exif_noai"], "x")


def test_a_manifest_made_invalid_after_signing_fails_closed(works):
    data = works["cawg_allowed"]
    i = data.find(C2PA_STORE_UUID) + 1500  # in the signature: the store parses, the reader judges it Invalid
    broken = data[:i] + b"\x00" * 8 + data[i + 8 :]
    assert (
        "is invalid" in reservation(broken, "x")
        and reason(reservation(broken, "x")) == "rights_undetermined:c2pa_unreadable"
    )
    # a reservation is honoured even in a manifest that does not validate
    denied = works["cawg_not_allowed"]
    j = denied.find(C2PA_STORE_UUID) + 1500
    assert reason(reservation(denied[:j] + b"\x00" * 8 + denied[j + 8 :], "x")) in (
        "opted_out:c2pa_training_mining",
        "rights_undetermined:c2pa_unreadable",
    )


def test_noai_rule_is_not_greedy():
    for text in (
        "noai",
        "NoImageAI",
        "noindex, noai",
        "robots: noai",
        "AtelierBot: noimageai",
        "art;NOAI;sky",
        "Harbour at dawn. #NoAI",
        "#noimageai",
    ):
        assert noai_marker(text), text
    for text in (
        "no AI was used",
        "Noaidi",
        "noairbrush",
        "https://example.org/noai/x.jpg",
        "made without noai tools",
        "Sunset #NoAIrt",
        "",
        "AI",
        "no-ai",
    ):
        assert noai_marker(text) is None, text


def test_unparseable_xmp_still_honours_a_prohibition():
    packet = (
        b'<x:xmpmeta><rdf:Description plus:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING">'
    )
    packet += b"<unclosed></x:xmpmeta>"
    assert reason(reservation(jpeg(xmp=packet), "x")) == "opted_out:xmp_data_mining"
    # plus:OtherConstraints is free text and is not read; an unspecified value reserves nothing
    other = xmp_packet("http://ns.useplus.org/ldf/vocab/DMI-UNSPECIFIED").replace(
        b"<rdf:Description ", b'<rdf:Description plus:OtherConstraints="no mining please" '
    )
    assert reservation(jpeg(xmp=other), "x") is None


def _folder(tmp_path, works: dict[str, bytes]) -> FolderSourceParams:
    root = tmp_path / "folder"
    root.mkdir()
    with (root / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for name, data in works.items():
            file_name = f"{name}.{ext(data)}"
            (root / file_name).write_bytes(data)
            fh.write(
                json.dumps({"file_name": file_name, "title": name, "creator": "A. Painter", "license": "CC0-1.0"})
                + "\n"
            )
    return FolderSourceParams(name="local", kind="folder", path=str(root))


def test_folder_source_excludes_reserved_works_with_their_reason(tmp_path, works):
    records = ingest_source(_folder(tmp_path, works), tmp_path / "packs")
    by_title = {r["title"]: r for r in records}
    for name, want in EXPECTED.items():
        record = by_title[name]
        assert reason(record["ingest_error"]) == want, (name, record["ingest_error"])
        assert record["record_id"] == hashlib.sha256(works[name]).hexdigest()  # the id stays: copies can be found
        assert (record["raw_pack"] is None) == (want is not None), name  # a reserved work's bytes are not stored
    # the clean stage turns each into a reject with that reason; the rest go on
    raw = pd.DataFrame(records)
    packs = {r["record_id"]: works[r["title"]] for r in records}
    p = CleanParams(resolution=32, min_size=32, max_pixels=40_000_000, near_duplicate_hamming=0)
    clean, rejects = clean_records(raw, lambda r: packs[r["record_id"]], p)
    assert dict(zip(rejects["title"], rejects["reason"])) == {n: w for n, w in EXPECTED.items() if w}
    assert sorted(clean["title"]) == sorted(n for n, w in EXPECTED.items() if w is None)


def test_shard_and_parquet_sources_are_read_the_same_way(tmp_path, works):
    cases = ["cawg_not_allowed", "xmp_prohibited", "corrupted", "png_text_noai", "plain_png", "cawg_allowed"]
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for i, name in enumerate(cases):
            data = works[name]
            for member, body in (
                (f"{i:06d}.{ext(data)}", data),
                (f"{i:06d}.json", json.dumps({"title": name, "license": "CC0-1.0"}).encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    table = pa.table(
        {
            "image": [{"bytes": works[n], "path": f"{n}.img"} for n in cases],
            "title": cases,
            "license": ["CC0-1.0"] * len(cases),
        }
    )
    (tmp_path / "hf").mkdir()
    pq.write_table(table, tmp_path / "hf" / "train.parquet")
    for source in (
        ShardSourceParams(name="laion", kind="webdataset", path=str(shard.parent)),
        ParquetSourceParams(name="hf", kind="parquet", path=str(tmp_path / "hf")),
    ):
        records = ingest_source(source, tmp_path / f"packs-{source.name}")
        assert {r["title"]: reason(r["ingest_error"]) for r in records} == {n: EXPECTED[n] for n in cases}, source.kind
