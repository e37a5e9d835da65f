"""Parquet sources in the Hugging Face datasets layout: one row per image, an image column plus metadata columns.

The image column (`image_column`, default `image`) is either the datasets `Image` feature, a struct
{bytes: binary, path: string}, or a plain binary column. A row's image is

- its `bytes` when they are set (the usual case: the image is embedded in the file);
- else the file its `path` names, relative to the parquet file's folder; a path that leads outside that folder
  (absolute, `..`, a link out) is refused as path_outside_source. Such a file is read later by the ingest
  worker, like a folder source's file, and its fingerprint is the file's own;
- else nothing: file_missing.

Every other column is a metadata field, read through `columns` (title, creator, caption, ...), with its value as
Parquet holds it (ingest turns numbers and dates into text).

`path` is one .parquet file, a folder (its .parquet files, sorted by name) or a glob. Files are read in batches of
BATCH_ROWS rows, so memory stays at one batch (at most one row group of pyarrow's read-ahead) whatever the size of
the file. A file without the image column is a configuration mistake and raises ValueError before any row is read;
a file that is not Parquet, or breaks while it is read, yields one error item and reading goes on with the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from atelier.sources.folder import locate
from atelier.sources.item import Item, source_root
from atelier.sources.shards import resolve_files

BATCH_ROWS = 256


def _image_layout(schema, column: str) -> str:
    """'struct' or 'binary': how `column` holds the image; ValueError if it holds neither."""
    import pyarrow as pa

    kind = schema.field(column).type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        inner = kind.field(kind.get_field_index("bytes")).type
        if pa.types.is_binary(inner) or pa.types.is_large_binary(inner):
            return "struct"
    raise ValueError(
        f"column '{column}' has type {kind}; an image column is binary or the Hugging Face Image "
        f"struct {{bytes: binary, path: string}}"
    )


def _check(path: Path, source) -> tuple[str | None, str | None]:
    """(image layout, None), or (None, why the file cannot be read). ValueError when the file has no usable image
    column: that is params.yaml's mistake, not a row's. Reads only the file's footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        return None, f"file_unreadable: {path.name} cannot be read as a Parquet file ({exc})"
    column = source.image_column
    if column not in schema.names:
        raise ValueError(
            f"source '{source.name}': {path} has no image column '{column}'; its columns are "
            f"{schema.names}. Set image_column for this source in params.yaml ingest.sources"
        )
    try:
        return _image_layout(schema, column), None
    except ValueError as exc:
        raise ValueError(
            f"source '{source.name}': {path}: {exc}; set image_column for this source in params.yaml ingest.sources"
        ) from None


def _rows(pf, column: str, layout: str) -> Iterator[tuple[int | None, object, str | None, dict]]:
    """(image size or None, image bytes accessor, path, fields) per row, one batch at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        images = batch.column(column)
        if layout == "struct":
            children = images.flatten()  # the struct's own nulls carried into its fields
            data = children[images.type.get_field_index("bytes")]
            at = images.type.get_field_index("path")
            paths = children[at] if at >= 0 else pa.nulls(len(batch))
        else:
            data, paths = images, pa.nulls(len(batch))
        sizes = pc.binary_length(data).to_pylist()
        names = paths.to_pylist()
        fields = batch.select([n for n in batch.schema.names if n != column]).to_pylist()
        for i in range(len(batch)):
            yield sizes[i], data[i], names[i], fields[i]


def iter_parquet(source, max_file_bytes: int) -> Iterator[Item]:
    """One item per row of each file, in file order; row counts rows across the whole source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [path for path, exists in resolve_files(source.path, (".parquet",)) if exists]
    if not files:
        raise FileNotFoundError(
            f"source '{source.name}': no .parquet files at {source_root(source.path)}; set its path in params.yaml "
            f"ingest.sources to a .parquet file, a folder of them or a glob (data/*.parquet)"
        )
    checked = [(path, *_check(path, source)) for path in files]  # every schema checked before the first row
    row = 0
    for path, layout, problem in checked:
        if problem is None:
            try:
                stat, pf = path.stat(), pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                problem = f"file_unreadable: {path.name} cannot be read as a Parquet file ({exc})"
        if problem is not None:
            row += 1
            yield Item(row=row, uri=path.name, error=problem)
            continue
        folder = path.parent
        in_file = 0
        try:
            for size, data, image_path, fields in _rows(pf, source.image_column, layout):
                in_file += 1
                row += 1
                item = Item(row=row, uri=f"{path.name}#{in_file}", fields=fields)
                if size is not None:
                    if size > max_file_bytes:
                        item.error = (
                            f"file_too_large: row {in_file} of {path.name} has a {size}-byte image, over "
                            f"ingest.max_file_bytes={max_file_bytes} for one image"
                        )
                    else:
                        item.data = data.as_py()
                        item.fingerprint = f"parquet:{path}:{stat.st_size}:{stat.st_mtime_ns}:{in_file}"
                elif image_path and "\x00" in str(image_path):
                    item.error = f"metadata_malformed: row {in_file} of {path.name}: the image path has a NUL byte"
                elif image_path:
                    found, found_stat, error = locate(folder, str(image_path), source.name, in_file, max_file_bytes)
                    item.error = error and error.replace(f"(line {in_file})", f"(row {in_file} of {path.name})")
                    if found is not None:
                        item.path = str(found)
                        item.fingerprint = (
                            f"file:{found}:{found_stat.st_size}:{found_stat.st_mtime_ns}:{found_stat.st_ino}"
                        )
                else:
                    item.error = (
                        f"file_missing: row {in_file} of {path.name} has no image (column "
                        f"'{source.image_column}' has neither bytes nor a path)"
                    )
                yield item
        except (pa.ArrowException, OSError) as exc:
            row += 1
            yield Item(
                row=row,
                uri=f"{path.name}#broken",
                error=f"file_unreadable: {path.name} is corrupt after row {in_file} ({exc}); the rows "
                f"after that point are not read",
            )
        finally:
            pf.close()
