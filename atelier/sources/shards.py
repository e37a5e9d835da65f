"""WebDataset shards: .tar files whose members are grouped into samples by key, as webdataset and img2dataset
write them:

    00000.tar:  000000001.jpg  000000001.json  000000001.txt  000000002.png  000000002.json ...

The key is a member's name up to the first dot of its base name (`dir/0001.seg.png` has key `dir/0001`, extension
`seg.png`); consecutive members with the same key form one sample. A sample has

- one image: KEY.jpg, .jpeg, .png, .webp, .gif, .bmp, .tif or .tiff (other extensions, like .cls, are ignored);
- KEY.json, optional: a JSON object of metadata, read through `columns` like a folder source's metadata row;
- KEY.txt, optional: the caption, used when the JSON has no caption.

A member whose base name has no extension (`README`, `.hidden`) belongs to no sample and is skipped, as webdataset
does; so are folder entries.

img2dataset's JSON names the image URL `url`: when the JSON has no `columns.source_url` field, the `columns.url` field
(default `url`) is used as the source URL.

`path` is a folder (its *.tar files, sorted by name), one .tar file, a glob (`shards/*.tar`) or a brace range
(`shards/{00000..00009}.tar`, expanded in order; a shard the range names that does not exist is reported as an error
item). Shards are read as a stream, one member at a time: nothing is extracted to disk, so a member named
`../../x.png` is only a key, and no more than one sample is held in memory.

Nothing is dropped: a sample without an image, with two images, with unreadable JSON or with an image over
`max_file_bytes` is yielded with `error` set. A truncated or corrupt shard yields one error item where it breaks,
standing for the sample being read and all after it (they cannot be read), and reading goes on with the next shard.
A shard that ends without its end-of-archive marker counts as truncated: its last sample may be missing members.
"""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from atelier.sources.item import Item, source_root
from atelier.sources.metadata import not_text

IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
MAX_METADATA_BYTES = 4 * 2**20  # a bigger KEY.json or KEY.txt is refused (metadata_malformed) unread
MAX_BRACE_NAMES = 1_000_000  # a brace range naming more shards than this is a mistake in params.yaml

_BROKEN = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)  # how a bad shard fails
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext: key up to the base name's first dot


def expand_braces(pattern: str) -> list[str]:
    """Brace expansion as webdataset and img2dataset use it: `{00000..00009}` (zero-padded numeric range, in
    order) and `{a,b}` (alternatives). Braces that are neither are kept as they are."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numbers = _RANGE.fullmatch(body)
    if numbers:
        first, last = numbers.groups()
        lo, hi = int(first), int(last)
        if abs(hi - lo) + 1 > MAX_BRACE_NAMES:
            raise ValueError(
                f"'{pattern}': the range {{{body}}} names {abs(hi - lo) + 1} files, over "
                f"{MAX_BRACE_NAMES}; check the shard pattern"
            )
        padded = any(len(n.lstrip("-")) > 1 and n.lstrip("-").startswith("0") for n in (first, last))
        width = max(len(first), len(last)) if padded else 0
        step = 1 if hi >= lo else -1
        parts = [f"{n:0{width}d}" for n in range(lo, hi + step, step)]
    elif "," in body:
        parts = body.split(",")
    else:  # not a brace expression: keep it literally, expand what follows
        return [head + "{" + body + "}" + rest for rest in expand_braces(tail)]
    names = [name for part in parts for name in expand_braces(head + part + tail)]
    return list(dict.fromkeys(names))


def resolve_files(path: str, suffixes: tuple[str, ...]) -> list[tuple[Path, bool]]:
    """The files a source `path` names, each with whether it exists: a file; a folder (its files ending in one of
    `suffixes`, sorted by name); or a pattern with braces and/or glob wildcards (brace names in order, each glob
    sorted). A name that a brace range spells out but that does not exist is listed with False."""
    root = source_root(path)
    if root.is_file():
        return [(root, True)]
    if root.is_dir():
        return [
            (p, True)
            for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.lower().endswith(suffixes) and p.is_file()
        ]
    found: list[tuple[Path, bool]] = []
    for name in expand_braces(str(root)):
        if glob.has_magic(name):
            found += [(Path(p), True) for p in sorted(glob.glob(name, recursive=True)) if os.path.isfile(p)]
        else:
            found.append((Path(name), os.path.isfile(name)))
    return list(dict.fromkeys(found))


def _text_problem(raw: bytes) -> tuple[str, str | None]:
    """`raw` as text (a leading BOM dropped) and why it is not storable text, or None."""
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    return text, not_text(text)


def parse_json_member(raw: bytes, name: str) -> tuple[dict, str | None]:
    """A KEY.json member's metadata, or {} and why it cannot be used ("metadata_malformed: ...")."""
    text, problem = _text_problem(raw)
    if problem:
        return {}, f"metadata_malformed: {name} {problem}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"metadata_malformed: {name} is not valid JSON ({exc.msg})"
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; absurdly deep nesting
        why = "is nested too deeply" if isinstance(exc, RecursionError) else f"holds an unreadable value ({exc})"
        return {}, f"metadata_malformed: {name} {why}"
    if not isinstance(obj, dict):
        return {}, f"metadata_malformed: {name} is not a JSON object"
    problem = not_text(json.dumps(obj, ensure_ascii=False))
    if problem:
        return {}, f"metadata_malformed: {name} {problem}"
    return obj, None


def _safe_name(name: str) -> str:
    """A member name as storable text: bytes that were not UTF-8 become U+FFFD, NULs are dropped."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a pipe"
    return "not a regular file"


@dataclass
class _Sample:
    """The members of one sample seen so far; only the first image's bytes are kept."""

    key: str
    images: list[str] = field(default_factory=list)
    data: bytes | None = None
    too_large: str | None = None
    fields: dict = field(default_factory=dict)
    caption: str | None = None
    problems: list[str] = field(default_factory=list)  # metadata_malformed, in member order
    refused: list[str] = field(default_factory=list)  # "KEY.jpg is a symbolic link"
    seen: set[str] = field(default_factory=set)


class _TarInfo(tarfile.TarInfo):
    """Notes on the archive whether its last header read was the end-of-archive marker. tarfile stops silently at
    a truncated or invalid header after the first one; this tells such a stop from a proper end."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            info = super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.atelier_clean_end = True
            raise
        tar.atelier_clean_end = False
        return info


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else b""


class _ShardReader:
    def __init__(self, source, max_file_bytes: int):
        self.source, self.columns, self.max_file_bytes = source, source.columns, max_file_bytes
        self.row = 0

    def item(self, **kwargs) -> Item:
        self.row += 1
        return Item(row=self.row, **kwargs)

    def add(self, sample: _Sample, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, ext: str) -> None:
        """Take one member into its sample (reading its bytes now: a stream cannot come back to it)."""
        if not member.isfile():
            sample.refused.append(f"{name} is {_member_kind(member)}")
            return
        if ext in IMAGE_EXTENSIONS:
            sample.images.append(name)
            if len(sample.images) > 1:
                sample.data = None  # ambiguous: refused below, keep no bytes
            elif member.size > self.max_file_bytes:
                sample.too_large = (
                    f"file_too_large: {name} has {member.size} bytes, over ingest.max_file_bytes="
                    f"{self.max_file_bytes} for one image"
                )
            else:
                sample.data = _read_member(tar, member)
            return
        if ext not in ("json", "txt"):
            return  # another modality (.cls, .seg.png, .npy): not ours
        if ext in sample.seen:
            sample.problems.append(f"metadata_malformed: sample '{sample.key}' has more than one .{ext} member")
            return
        sample.seen.add(ext)
        if member.size > MAX_METADATA_BYTES:
            sample.problems.append(
                f"metadata_malformed: {name} has {member.size} bytes, over the limit of "
                f"{MAX_METADATA_BYTES} for metadata"
            )
            return
        raw = _read_member(tar, member)
        if ext == "json":
            sample.fields, problem = parse_json_member(raw, name)
        else:
            sample.caption, problem = _text_problem(raw)
        if problem:
            sample.problems.append(problem if ext == "json" else f"metadata_malformed: {name} {problem}")

    def finish(self, sample: _Sample, shard: Path, stat: os.stat_result) -> Item:
        """The item of a complete sample."""
        fields = dict(sample.fields)
        cols = self.columns
        if sample.caption is not None and fields.get(cols.caption) in (None, ""):
            fields[cols.caption] = sample.caption
        if cols.source_url not in fields and fields.get(cols.url) not in (None, ""):
            fields[cols.source_url] = fields[cols.url]  # img2dataset's `url`
        error = sample.problems[0] if sample.problems else None
        if error is None and not sample.images:
            why = f" ({'; '.join(sample.refused)}; refused)" if sample.refused else ""
            error = (
                f"file_missing: sample '{sample.key}' in shard {shard.name} has no image member{why}; an "
                f"image is KEY.{' or KEY.'.join(sorted(IMAGE_EXTENSIONS))}"
            )
        if error is None and len(sample.images) > 1:
            error = (
                f"metadata_malformed: sample '{sample.key}' in shard {shard.name} has {len(sample.images)} "
                f"images ({', '.join(sample.images)}); keep one per sample"
            )
        error = error or sample.too_large
        item = self.item(uri=f"{shard.name}/{sample.key}", fields=fields, error=error)
        if error is None:
            item.data = sample.data
            item.fingerprint = f"tar:{shard}:{stat.st_size}:{stat.st_mtime_ns}:{sample.key}"
        return item

    def read_shard(self, shard: Path) -> Iterator[Item]:
        try:
            stat = shard.stat()
            tar = tarfile.open(shard, mode="r|*", tarinfo=_TarInfo)
        except _BROKEN as exc:
            yield self.item(
                uri=shard.name,
                error=f"file_unreadable: shard {shard.name} cannot be read as a tar "
                f"archive ({exc}); rewrite or remove it",
            )
            return
        count, last_key, sample = 0, None, None
        try:
            with tar:
                for member in tar:
                    tar.members = []  # stream mode keeps every header otherwise
                    if member.isdir():
                        continue
                    name = _safe_name(member.name)
                    match = _KEY.match(name)
                    if match is None:
                        continue  # no extension: part of no sample (webdataset skips it too)
                    key, ext = match.group(1), match.group(2).lower()
                    if sample is not None and sample.key != key:
                        yield self.finish(sample, shard, stat)
                        count, last_key, sample = count + 1, sample.key, None
                    if sample is None:
                        sample = _Sample(key)
                    self.add(sample, tar, member, name, ext)
                if not getattr(tar, "atelier_clean_end", True):
                    raise tarfile.ReadError("it stops before its end-of-archive marker")
        except _BROKEN as exc:
            # the sample in progress is lost with the rest of the shard: this item stands for it
            where = f"after sample {count} ('{last_key}')" if count else "before its first complete sample"
            yield self.item(
                uri=f"{shard.name}#broken",
                error=f"file_unreadable: shard {shard.name} is truncated or corrupt {where}: {exc}; "
                f"the samples after that point are not read",
            )
            return
        if sample is not None:
            yield self.finish(sample, shard, stat)


def iter_shards(source, max_file_bytes: int) -> Iterator[Item]:
    """One item per sample of each shard, in shard order; row counts samples across the whole source."""
    shards = resolve_files(source.path, (".tar",))
    if not any(exists for _, exists in shards):
        raise FileNotFoundError(
            f"source '{source.name}': no .tar shards at {source_root(source.path)}; set its path in params.yaml "
            f"ingest.sources to a folder of .tar files, a glob (shards/*.tar) or a brace range "
            f"(shards/{{00000..00009}}.tar)"
        )
    reader = _ShardReader(source, max_file_bytes)
    for shard, exists in shards:
        if not exists:
            yield reader.item(
                uri=shard.name, error=f"file_missing: shard {shard} named by '{source.path}' does not exist"
            )
            continue
        yield from reader.read_shard(shard)
