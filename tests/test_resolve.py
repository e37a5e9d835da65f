"""The resolution service over real HTTP: a small real ledger of signed, watermarked artworks; byBinding and byContent
find a stripped, re-encoded copy and its manifest store; a foreign image finds nothing; hostile requests get JSON
4xx answers; and nothing the server does changes the ledger file."""

import hashlib
import http.client
import io
import json
import threading
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from test_provenance_signing import manifest_for

from app import resolve
from app.cli import main as cli_main
from atelier.hashing import phash, pixels_sha256
from provenance import ledger, watermark
from provenance.keys import ensure_signing_identity
from provenance.png import png_with_manifest
from provenance.signing import artwork_terms, read_credentials, sign_png


def picture(seed: int) -> Image.Image:
    """A 256 px smooth random picture (an 8x8 colour field upscaled), different for each seed."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(50, 206, (8, 8, 3), dtype=np.uint8))
    return small.resize((256, 256), Image.BICUBIC)


def make_artwork(conn, identity, folder, seed: int) -> dict:
    """Watermark, then sign, then record: as stages/generate.py does, at toy size."""
    image = picture(seed)
    wm_id = ledger.watermark_id_for(conn, pixels_sha256(image))
    marked = watermark.embed(image, wm_id)
    manifest = manifest_for(marked)
    manifest["artwork"]["watermark"]["id"] = wm_id  # the method stays as the shipped schema allows
    signed = sign_png(png_with_manifest(marked, manifest), manifest, identity, artwork_terms(manifest))
    (folder / f"{manifest['id']}.png").write_bytes(signed)
    ledger.record(conn, manifest, wm_id)
    return manifest


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three signed artworks in a ledger, and a running server over it (read-only)."""
    root = tmp_path_factory.mktemp("resolve")
    identity = ensure_signing_identity(root / "keys" / "signing")
    artworks = root / "artworks"
    artworks.mkdir()
    conn = ledger.open_ledger(root / "ledger.sqlite")
    manifests = [make_artwork(conn, identity, artworks, seed) for seed in (1, 2, 3)]
    conn.close()
    server = resolve.make_server("127.0.0.1", 0, root / "ledger.sqlite", artworks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {
        "server": server,
        "manifests": manifests,
        "artworks": artworks,
        "ledger": root / "ledger.sqlite",
        "identity": identity,
    }
    server.shutdown()
    server.server_close()


def request(site, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request to the running server."""
    host, port = site["server"].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post_image(site, data: bytes, content_type: str = "image/jpeg", query: str = ""):
    return request(site, "POST", f"/matches/byContent{query}", data, {"Content-Type": content_type})


def jpeg(image: Image.Image, quality: int = 80) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def signed_file(site, manifest: dict) -> bytes:
    return (site["artworks"] / f"{manifest['id']}.png").read_bytes()


def test_supported_algorithms(site):
    status, headers, body = request(site, "GET", "/services/supportedAlgorithms")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "watermarks": [{"alg": "local.atelier.watermark.2"}],
        "fingerprints": [{"alg": resolve.PHASH_ALG}],
    }


def test_by_binding_finds_the_artwork_its_credentials_declare(site):
    manifest = site["manifests"][1]
    binding = read_credentials(signed_file(site, manifest), site["identity"].ca_pem())["soft_binding"]
    value = binding["blocks"][0]["value"]
    status, _, body = request(site, "GET", "/matches/byBinding?" + urlencode({"alg": binding["alg"], "value": value}))
    assert status == 200
    assert json.loads(body)["matches"] == [
        {"manifestId": manifest["id"], "similarityScore": 100, "foundBy": "watermark"}
    ]
    status, _, body = request(
        site,
        "POST",
        "/matches/byBinding",
        json.dumps({"alg": binding["alg"], "value": value}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200 and json.loads(body)["matches"][0]["manifestId"] == manifest["id"]
    unknown = urlencode({"alg": watermark.ALG, "value": watermark.binding_value(2**40 + 1)})
    status, _, body = request(site, "GET", "/matches/byBinding?" + unknown)
    assert (status, json.loads(body)) == (200, {"matches": []})


def test_by_content_finds_a_stripped_reencoded_copy_and_its_manifest_store(site):
    manifest = site["manifests"][0]
    signed = signed_file(site, manifest)
    with Image.open(io.BytesIO(signed)) as img:
        stripped = jpeg(img, quality=90)  # a re-encode: no C2PA manifest, no iTXt chunk, lossy pixels
    assert read_credentials(stripped)["state"] is None
    status, _, body = post_image(site, stripped)
    assert status == 200
    matches = json.loads(body)["matches"]
    assert matches[0]["manifestId"] == manifest["id"] and matches[0]["foundBy"] == "watermark"
    assert all(m["manifestId"] != manifest["id"] for m in matches[1:])
    status, headers, store = request(site, "GET", f"/manifests/{matches[0]['manifestId']}")
    assert status == 200 and headers["Content-Type"] == "application/c2pa"
    assert store == resolve.c2pa_store(signed) and store[4:8] == b"jumb"
    label = read_credentials(signed)["manifest_label"]
    assert label.encode() in store  # the active manifest's label, inside the JUMBF store


def test_by_content_falls_back_to_the_perceptual_hash(site):
    """A copy too small to hold the mark (64 px) is found by its perceptual hash alone; multipart works too."""
    manifest = site["manifests"][2]
    with Image.open(io.BytesIO(signed_file(site, manifest))) as img:
        small = jpeg(img.resize((96, 96), Image.LANCZOS), quality=90)
    boundary = "atelierboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + small
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, answer = post_image(site, body, f"multipart/form-data; boundary={boundary}")
    assert status == 200
    first = json.loads(answer)["matches"][0]
    assert first["manifestId"] == manifest["id"] and first["foundBy"] == "phash"
    assert first["phashDistance"] <= resolve.PHASH_MAX_BITS


def test_a_foreign_image_has_no_match(site):
    foreign = Image.fromarray(np.random.default_rng(99).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    assert all(phash(foreign) != m["artwork"]["phash"] for m in site["manifests"])
    status, _, body = post_image(site, jpeg(foreign))
    assert (status, json.loads(body)) == (200, {"matches": []})


def test_an_artwork_recorded_while_serving_is_found(site, tmp_path):
    """The phash index takes the rows added since its last refresh."""
    conn = ledger.open_ledger(site["ledger"])
    try:
        manifest = make_artwork(conn, site["identity"], site["artworks"], seed=4)
    finally:
        conn.close()
    site["manifests"].append(manifest)
    with Image.open(site["artworks"] / f"{manifest['id']}.png") as img:
        small = jpeg(img.resize((100, 100), Image.LANCZOS), quality=90)
    status, _, body = post_image(site, small)
    assert status == 200 and json.loads(body)["matches"][0]["manifestId"] == manifest["id"]


def hostile_cases(site) -> list[tuple[str, tuple, int]]:
    png = signed_file(site, site["manifests"][0])
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 million pixels in a few kB
    return [
        ("not an image", ("POST", "/matches/byContent", b"hello, this is text", {"Content-Type": "image/png"}), 400),
        ("truncated PNG", ("POST", "/matches/byContent", png[: len(png) // 2], {"Content-Type": "image/png"}), 400),
        ("decompression bomb", ("POST", "/matches/byContent", bomb.getvalue(), {"Content-Type": "image/png"}), 413),
        ("wrong Content-Type", ("POST", "/matches/byContent", png, {"Content-Type": "text/plain"}), 415),
        ("bad base64", ("GET", f"/matches/byBinding?alg={watermark.ALG}&value=%25%25not-base64", None, {}), 400),
        ("short value", ("GET", f"/matches/byBinding?alg={watermark.ALG}&value=AAAA", None, {}), 400),
        ("unknown alg", ("GET", "/matches/byBinding?alg=com.example.mark&value=AAAAAAAAAAE%3D", None, {}), 400),
        ("no value", ("GET", f"/matches/byBinding?alg={watermark.ALG}", None, {}), 400),
        (
            "bad maxResults",
            ("GET", f"/matches/byBinding?alg={watermark.ALG}&value=AAAAAAAAAAE%3D&maxResults=0", None, {}),
            400,
        ),
        ("JSON not an object", ("POST", "/matches/byBinding", b"[1]", {"Content-Type": "application/json"}), 400),
        ("path traversal", ("GET", "/manifests/../ledger.sqlite", None, {}), 404),
        ("encoded traversal", ("GET", "/manifests/..%2f..%2fledger.sqlite", None, {}), 404),
        ("unknown manifest", ("GET", "/manifests/0123456789abcdef", None, {}), 404),
        ("unknown path", ("GET", "/admin", None, {}), 404),
        ("wrong method", ("GET", "/matches/byContent", None, {}), 405),
        ("DELETE", ("DELETE", "/manifests/0123456789abcdef", None, {}), 405),
    ]


def test_hostile_requests_get_json_errors_and_leave_the_ledger_unchanged(site):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in site["ledger"].parent.glob("ledger*")}
    for name, (method, path, body, headers), expected in hostile_cases(site):
        status, got_headers, answer = request(site, method, path, body, headers)
        assert status == expected, (name, status, answer)
        assert got_headers["Content-Type"] == "application/json", name
        error = json.loads(answer)["error"]
        assert error and "Traceback" not in error, name
    unknown = json.loads(request(site, "GET", "/matches/byBinding?alg=x.y&value=AAAAAAAAAAE%3D")[2])["error"]
    assert watermark.ALG in unknown and resolve.PHASH_ALG in unknown  # names the supported ones
    post_image(site, signed_file(site, site["manifests"][0]), "image/png")  # a valid lookup writes nothing either
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in site["ledger"].parent.glob("ledger*")}
    assert after == before


def test_an_oversized_upload_is_refused(site):
    """A declared body over MAX_UPLOAD is answered 413 before it is read; a sent one is refused too (413 or reset)."""
    host, port = site["server"].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.putrequest("POST", "/matches/byContent")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", str(resolve.MAX_UPLOAD + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and "at most" in json.loads(response.read())["error"]
    finally:
        conn.close()
    try:
        status, _, _ = post_image(site, b"\0" * (resolve.MAX_UPLOAD + 5 * 1024 * 1024), "image/png")
    except (ConnectionResetError, BrokenPipeError):
        status = 413  # the server closed the connection while the body was still being sent: refused
    assert status == 413


def test_a_non_loopback_host_needs_public(capsys):
    assert cli_main(["resolve", "serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--public" in capsys.readouterr().err


def test_the_audit_checks_the_soft_binding_against_pixels_and_ledger(site, tmp_path):
    from app.audit import Context, audit_artwork

    conn = ledger.open_read_only(site["ledger"])
    try:
        context = Context(site["identity"].ca_pem(), "workspace", conn=conn, lineage=False)
        good = site["artworks"] / f"{site['manifests'][0]['id']}.png"
        check = next(c for c in audit_artwork(good, context)["checks"] if c["name"] == "soft binding")
        assert check["ok"] and "read from the pixels, and recorded" in check["detail"], check
        marked = watermark.embed(picture(5), 777)  # the pixels carry 777, the signed manifest declares 778
        manifest = manifest_for(marked)
        manifest["artwork"]["watermark"]["id"] = 778
        lying = tmp_path / "lying.png"
        lying.write_bytes(
            sign_png(png_with_manifest(marked, manifest), manifest, site["identity"], artwork_terms(manifest))
        )
        check = next(c for c in audit_artwork(lying, context)["checks"] if c["name"] == "soft binding")
        assert not check["ok"] and "the pixels carry watermark id 777" in check["detail"], check
    finally:
        conn.close()


def test_the_phash_index_agrees_with_the_ledger_scan(site):
    conn = ledger.open_read_only(site["ledger"])
    try:
        index = resolve.PhashIndex()
        assert index.refresh(conn) == len(site["manifests"]) and index.refresh(conn) == 0
        for m in site["manifests"]:
            h = f"{int(m['artwork']['phash'], 16) ^ 0b101:016x}"  # 2 bits off
            expected = [(r["id"], r["distance"]) for r in ledger.by_phash(conn, h, max_distance=resolve.PHASH_MAX_BITS)]
            assert index.near(h, resolve.PHASH_MAX_BITS, 10) == expected and expected[0] == (m["id"], 2)
    finally:
        conn.close()


def test_the_cli_serves_until_stopped(site):
    """`atelier resolve serve --port 0` in its own process: prints its address, answers, stops on SIGINT."""
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "resolve",
            "serve",
            "--port",
            "0",
            "--ledger",
            str(site["ledger"]),
            "--artworks",
            str(site["artworks"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found and f"{len(site['manifests'])} artworks" in line, line
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=60)
        value = watermark.binding_value(site["manifests"][0]["artwork"]["watermark"]["id"])
        conn.request("GET", "/matches/byBinding?" + urlencode({"alg": watermark.ALG, "value": value}))
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["matches"][0]["manifestId"] == site["manifests"][0]["id"]
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
