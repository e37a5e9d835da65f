import io
import json

from PIL import Image

from atelier.config import Columns
from atelier.config import FolderSourceParams as SourceParams
from atelier.rawstore import read_bytes
from atelier.sources.metadata import parse_csv, parse_jsonl
from stages.ingest import ingest_source


def _png(colour=(10, 20, 30), size=40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_source_keeps_bad_rows_with_reasons(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png((1, 2, 3)))
    (folder / "b.png").write_bytes(_png((4, 5, 6)))
    rows = [
        {
            "file_name": "a.png",
            "title": "A",
            "creator": "Ann",
            "caption": "a red grid composition",
            "license": "CC0-1.0",
        },
        '{"file_name": "broken.png", "title": ',
        {"file_name": "../../etc/passwd", "title": "Escape", "license": "CC0-1.0"},
        {"file_name": "b.png", "title": "B", "creator": "Bo", "caption": "x", "license": "CC-BY-4.0", "noai": "yes"},
        {"file_name": "gone.png", "title": "Gone"},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    records = ingest_source(SourceParams(name="mine", kind="folder", path=str(folder)), tmp_path / "raw")
    by_uri = {r["source_uri"]: r for r in records}
    assert len(records) == 5
    assert by_uri["a.png"]["ingest_error"] is None and by_uri["b.png"]["ingest_error"] is None
    assert by_uri["b.png"]["noai"] is True
    assert read_bytes(by_uri["a.png"]) == (folder / "a.png").read_bytes()
    assert by_uri["<line 2>"]["ingest_error"].startswith("metadata_malformed")
    assert by_uri["../../etc/passwd"]["ingest_error"].startswith("path_outside_source")
    assert by_uri["gone.png"]["ingest_error"].startswith("file_missing")
    assert len({r["record_id"] for r in records}) == 5
    assert [p.suffix for p in (tmp_path / "raw").iterdir()] == [".parquet"]  # one pack, nothing else written


def test_custom_column_names_and_csv_with_bom(tmp_path):
    folder = tmp_path / "csvsrc"
    folder.mkdir()
    (folder / "x.png").write_bytes(_png())
    csv_text = "\ufeffimage,name,artist,text,rights\nx.png,Ex,Eve,a blue grid composition,CC0-1.0\nbad,row\n"
    (folder / "metadata.csv").write_text(csv_text, encoding="utf-8")
    columns = Columns(file_name="image", title="name", creator="artist", caption="text", license="rights")
    records = ingest_source(SourceParams(name="c", kind="folder", path=str(folder), columns=columns), tmp_path / "raw")
    good = [r for r in records if r["ingest_error"] is None]
    assert len(good) == 1 and good[0]["creator"] == "Eve" and good[0]["license_raw"] == "CC0-1.0"
    assert any((r["ingest_error"] or "").startswith("metadata_malformed") for r in records)


def test_parsers_never_lose_a_line():
    assert len(parse_jsonl(b'{"file_name": "a"}\n[1, 2]\n\nnot json\n')) == 3
    assert len(parse_csv(b"file_name,title\na,b\nc\n")) == 2
