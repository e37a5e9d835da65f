"""WebDataset shards and Parquet sources: the same images as an equivalent folder source give the same records, and
broken shards, samples and rows become error items, never exceptions or silent gaps."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atelier.config import FolderSourceParams, ParquetSourceParams, ShardSourceParams
from atelier.sources import Item, iter_items
from atelier.sources.parquet import iter_parquet
from atelier.sources.shards import expand_braces, iter_shards

N_IMAGES = 12
MISSING_ROW = 7  # 0-based row whose file does not exist
NOAI_ROW = 3
PATH_ROW = 5  # in the parquet file, this row's image is a file named by `path`, not embedded bytes
MB = 2**20


def image_bytes(i: int) -> tuple[bytes, str]:
    """A small distinct image, PNG or JPEG."""
    img = Image.new("RGB", (16, 16), ((i * 40) % 256, (i * 90) % 256, (i * 150) % 256))
    img.putpixel((i % 16, 0), (255, 255, 255))
    buf = io.BytesIO()
    fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
    img.save(buf, fmt)
    return buf.getvalue(), ext


def add_member(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = len(data), kind, link, 1_700_000_000
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """One collection of images and metadata, written as a folder source, as two WebDataset shards and as a
    Hugging Face style Parquet file."""
    root = tmp_path_factory.mktemp("corpus")
    rows, images = [], {}
    for i in range(N_IMAGES):
        data, ext = image_bytes(i)
        row = {
            "file_name": f"img_{i:02d}.{ext}",
            "title": f"Work {i}",
            "creator": f"Artist {i % 4}",
            "caption": f"a picture number {i}",
            "license": "CC-BY-4.0" if i % 3 else "CC0-1.0",
            "source_url": f"https://example.org/works/{i}",
        }
        if i == NOAI_ROW:
            row["noai"] = True
        if i == MISSING_ROW:
            row["file_name"] = "does_not_exist.png"
        else:
            images[i] = data
        rows.append(row)

    folder = root / "folder"
    folder.mkdir()
    for i, data in images.items():
        (folder / rows[i]["file_name"]).write_bytes(data)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    shards = root / "shards"
    shards.mkdir()
    for shard, part in enumerate((range(0, 6), range(6, N_IMAGES))):
        members = []
        for i in part:
            key = f"{i:09d}"
            meta = {k: v for k, v in rows[i].items() if k != "file_name"}
            if i % 2:  # img2dataset style: caption in KEY.txt, image URL as `url`
                caption = meta.pop("caption")
                meta["url"] = meta.pop("source_url")
                members.append((f"{key}.txt", caption.encode()))
            if i in images:
                members.append((f"{key}.{rows[i]['file_name'].rsplit('.', 1)[1]}", images[i]))
            members.append((f"{key}.json", json.dumps(meta).encode()))
        write_tar(shards / f"{shard:05d}.tar", members)

    pq_dir = root / "parquet"
    (pq_dir / "images").mkdir(parents=True)
    (pq_dir / "images" / "five.png").write_bytes(images[PATH_ROW])
    image_col = []
    for i in range(N_IMAGES):
        if i == PATH_ROW:
            image_col.append({"bytes": None, "path": "images/five.png"})
        else:
            image_col.append({"bytes": images.get(i), "path": rows[i]["file_name"] if i in images else None})
    table = pa.table(
        {
            "image": pa.array(image_col, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            **{k: [r[k] for r in rows] for k in ("title", "creator", "caption", "license", "source_url")},
            "noai": [i == NOAI_ROW for i in range(N_IMAGES)],
        }
    )
    pq.write_table(table, pq_dir / "train-00000-of-00001.parquet", row_group_size=5)
    return {"root": root, "rows": rows, "images": images, "folder": folder, "shards": shards, "parquet": pq_dir}


def folder_source(c) -> FolderSourceParams:
    return FolderSourceParams(name="folder", kind="folder", path=str(c["folder"]))


def shard_source(path) -> ShardSourceParams:
    return ShardSourceParams(name="shards", kind="webdataset", path=str(path))


def parquet_source(path, **kw) -> ParquetSourceParams:
    return ParquetSourceParams(name="pq", kind="parquet", path=str(path), **kw)


def item_bytes(item: Item) -> bytes:
    return item.data if item.data is not None else Path(item.path).read_bytes()


def item_ids(items: list[Item]) -> list[str | None]:
    return [None if it.error else hashlib.sha256(item_bytes(it)).hexdigest() for it in items]


# --- acceptance: the same records from the three layouts ---------------------------------------------------------


def test_items_of_shards_and_parquet_match_the_folder_source(corpus):
    folder = list(iter_items(folder_source(corpus)))
    shards = list(iter_items(shard_source(corpus["shards"])))
    parquet = list(iter_items(parquet_source(corpus["parquet"])))
    assert len(folder) == len(shards) == len(parquet) == N_IMAGES
    assert item_ids(folder) == item_ids(shards) == item_ids(parquet)
    assert [it.row for it in shards] == [it.row for it in parquet] == list(range(1, N_IMAGES + 1))
    assert shards[MISSING_ROW].error.startswith("file_missing:")
    assert parquet[MISSING_ROW].error.startswith("file_missing:")
    assert shards[1].uri == "00000.tar/000000001" and shards[6].uri == "00001.tar/000000006"
    assert parquet[2].uri == "train-00000-of-00001.parquet#3"
    # caption from KEY.txt, img2dataset's url as the source URL
    assert shards[1].fields["caption"] == "a picture number 1"
    assert shards[1].fields["source_url"] == "https://example.org/works/1"
    assert parquet[PATH_ROW].path and parquet[PATH_ROW].fingerprint.startswith("file:")
    assert shards[0].fingerprint.startswith("tar:") and parquet[0].fingerprint.startswith("parquet:")


def records_by_id(records: list[dict]) -> dict[str, tuple]:
    keep = ("title", "creator", "caption", "license_raw", "source_url", "noai")
    return {r["record_id"]: tuple(r[k] for k in keep) for r in records if not r["ingest_error"]}


def test_shards_and_parquet_ingest_the_same_records_as_the_folder_source(corpus, tmp_path):
    from stages.ingest import ingest_source

    folder = ingest_source(folder_source(corpus), tmp_path / "a")
    shards = ingest_source(shard_source(corpus["shards"]), tmp_path / "b")
    parquet = ingest_source(parquet_source(corpus["parquet"]), tmp_path / "c")
    expected = {hashlib.sha256(d).hexdigest() for d in corpus["images"].values()}
    assert set(records_by_id(folder)) == expected
    assert records_by_id(folder) == records_by_id(shards) == records_by_id(parquet)
    for records in (folder, shards, parquet):
        assert Counter(str(r["ingest_error"]).split(":")[0] for r in records) == {
            "None": N_IMAGES - 1,
            "file_missing": 1,
        }
        assert [r["noai"] for r in records].count(True) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())


# --- shard paths -------------------------------------------------------------------------------------------------


def test_brace_expansion():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("s/{8..10}.tar") == ["s/8.tar", "s/9.tar", "s/10.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("plain{x}.tar") == ["plain{x}.tar"]


def test_brace_pattern_glob_and_single_file_name_the_same_shards(corpus):
    whole = item_ids(list(iter_shards(shard_source(corpus["shards"]), MB)))
    braces = item_ids(list(iter_shards(shard_source(corpus["shards"] / "{00000..00001}.tar"), MB)))
    globbed = item_ids(list(iter_shards(shard_source(corpus["shards"] / "*.tar"), MB)))
    assert whole == braces == globbed
    assert len(list(iter_shards(shard_source(corpus["shards"] / "00001.tar"), MB))) == N_IMAGES - 6


def test_a_shard_the_range_names_but_that_is_missing_is_an_error_item(corpus):
    items = list(iter_shards(shard_source(corpus["shards"] / "{00000..00002}.tar"), MB))
    assert len(items) == N_IMAGES + 1
    assert items[-1].error.startswith("file_missing: shard") and "00002.tar" in items[-1].error


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .tar shards.*params.yaml"):
        list(iter_shards(shard_source(tmp_path / "{0..3}.tar"), MB))
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        list(iter_shards(shard_source(tmp_path), MB))


# --- hostile shards ----------------------------------------------------------------------------------------------


def test_truncated_shard_yields_an_error_item_and_the_next_shard_is_read(corpus, tmp_path):
    good = (corpus["shards"] / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(good[: len(good) // 2])
    (tmp_path / "00001.tar").write_bytes((corpus["shards"] / "00001.tar").read_bytes())
    items = list(iter_shards(shard_source(tmp_path), MB))
    broken = [it for it in items if it.error and it.error.startswith("file_unreadable")]
    assert len(broken) == 1 and "00000.tar is truncated or corrupt after sample" in broken[0].error
    assert items.index(broken[0]) < 6
    assert [it.uri.split("/")[0] for it in items].count("00001.tar") == N_IMAGES - 6
    assert [it.row for it in items] == list(range(1, len(items) + 1))


@pytest.mark.parametrize("damage", ["cut_at_header", "garbage_header", "not_a_tar", "empty"])
def test_corrupt_shards_never_end_silently(corpus, tmp_path, damage):
    good = (corpus["shards"] / "00000.tar").read_bytes()
    first = next(iter_shards(shard_source(corpus["shards"] / "00000.tar"), MB))
    with tarfile.open(corpus["shards"] / "00000.tar") as tar:
        header_at = next(m.offset for m in tar if m.name.startswith("000000001"))  # sample 1's first header
    data = {
        "cut_at_header": good[:header_at],
        "garbage_header": good[:header_at] + b"\x07" * 512 + good[header_at + 512 :],
        "not_a_tar": b"this is not a tar archive" * 100,
        "empty": b"",
    }[damage]
    (tmp_path / "00000.tar").write_bytes(data)
    items = list(iter_shards(shard_source(tmp_path), MB))
    assert items[-1].error.startswith("file_unreadable: shard 00000.tar")
    assert all(it.error is None or it is items[-1] for it in items)
    if damage.endswith("header"):
        assert item_ids(items[:-1]) == item_ids([first])[: len(items) - 1]


def test_sample_without_image_two_images_oversized_and_links(tmp_path):
    png, _ = image_bytes(1)
    big = png + b"\0" * 5000
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "a.json", b'{"title": "no image"}')
        add_member(tar, "b.png", png)
        add_member(tar, "b.jpg", png)
        add_member(tar, "c.png", big)
        add_member(tar, "c.json", b'{"title": "big"}')
        add_member(tar, "d.png", b"", tarfile.SYMTYPE, "/etc/passwd")
        add_member(tar, "e.png", png)
        add_member(tar, "e.json", b"[1, 2]")
        add_member(tar, "f.png", png)
        add_member(tar, "f.json", b'{"title": "\xff"}')
        add_member(tar, "dir/g.PNG", png)
        add_member(tar, "dir/g.seg.png", b"mask")
        add_member(tar, "dir/g.cls", b"3")
    items = list(iter_shards(shard_source(path), len(png) + 100))
    assert [it.uri for it in items] == [f"s.tar/{k}" for k in ("a", "b", "c", "d", "e", "f", "dir/g")]
    errors = [it.error.split(":")[0] if it.error else None for it in items]
    assert errors == [
        "file_missing",
        "metadata_malformed",
        "file_too_large",
        "file_missing",
        "metadata_malformed",
        "metadata_malformed",
        None,
    ]
    assert items[0].fields == {"title": "no image"} and "has no image member" in items[0].error
    assert "2 images (b.png, b.jpg)" in items[1].error and items[1].data is None
    assert items[2].data is None and items[2].fields["title"] == "big"
    assert "d.png is a symbolic link" in items[3].error
    assert "not a JSON object" in items[4].error and "not valid UTF-8" in items[5].error
    assert items[6].data == png


def test_member_named_outside_is_only_a_key(tmp_path):
    png, _ = image_bytes(2)
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    path = write_tar(
        tmp_path / "evil.tar",
        [("../../evil.png", png), ("../../evil.json", b'{"title": "x"}'), ("/abs/olute.png", png)],
    )
    items = list(iter_shards(shard_source(path), MB))
    assert [it.uri for it in items] == ["evil.tar/../../evil", "evil.tar//abs/olute"]
    assert items[0].data == png and items[0].error is None and items[0].fields == {"title": "x"}
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


# --- parquet -----------------------------------------------------------------------------------------------------


def test_parquet_path_images_stay_inside_the_folder(tmp_path):
    png, _ = image_bytes(4)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "ok.png").write_bytes(png)
    (tmp_path.parent / "outside.png").write_bytes(png)
    images = [
        {"bytes": None, "path": "pics/ok.png"},
        {"bytes": None, "path": "../outside.png"},
        {"bytes": None, "path": str(tmp_path / "pics" / "ok.png")},
        {"bytes": None, "path": "pics/gone.png"},
        None,
        {"bytes": png, "path": "../ignored-when-bytes-are-set.png"},
        {"bytes": png * 50, "path": None},
    ]
    pq.write_table(
        pa.table({"image": images, "title": [f"t{i}" for i in range(7)], "year": list(range(7))}),
        tmp_path / "a.parquet",
    )
    items = list(iter_parquet(parquet_source(tmp_path), len(png) * 2))
    errors = [it.error.split(":")[0] if it.error else None for it in items]
    assert errors == [
        None,
        "path_outside_source",
        "path_outside_source",
        "file_missing",
        "file_missing",
        None,
        "file_too_large",
    ]
    assert Path(items[0].path).read_bytes() == png and items[0].data is None
    assert items[5].data == png and items[5].path is None
    assert items[0].fields == {"title": "t0", "year": 0}
    assert "row 4 of a.parquet" in items[3].error


def test_parquet_binary_column_glob_and_several_files(tmp_path):
    png, _ = image_bytes(5)
    for n in range(2):
        pq.write_table(
            pa.table({"img": pa.array([png, None], pa.binary()), "title": [f"{n}a", f"{n}b"]}),
            tmp_path / f"part-{n}.parquet",
        )
    items = list(iter_parquet(parquet_source(tmp_path / "part-*.parquet", image_column="img"), MB))
    assert [it.uri for it in items] == ["part-0.parquet#1", "part-0.parquet#2", "part-1.parquet#1", "part-1.parquet#2"]
    assert [it.row for it in items] == [1, 2, 3, 4]
    assert [it.data == png for it in items] == [True, False, True, False]


def test_parquet_without_the_image_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"picture": [b"x"], "title": ["t"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"a.parquet has no image column 'image'.*'picture', 'title'.*image_column"):
        list(iter_parquet(parquet_source(tmp_path / "a.parquet"), MB))
    pq.write_table(pa.table({"image": ["not bytes"]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="type string.*image_column"):
        list(iter_parquet(parquet_source(tmp_path / "b.parquet"), MB))


def test_parquet_file_that_is_not_parquet_is_an_error_item(tmp_path):
    png, _ = image_bytes(6)
    (tmp_path / "a.parquet").write_bytes(b"PAR1 but not really")
    pq.write_table(pa.table({"image": pa.array([png], pa.binary())}), tmp_path / "b.parquet")
    items = list(iter_parquet(parquet_source(tmp_path), MB))
    assert items[0].error.startswith("file_unreadable: a.parquet") and items[1].data == png
