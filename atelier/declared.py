"""Sources declared once: every path a source in params.yaml `ingest.sources` reads must be a dep of the ingest stage
in dvc.yaml, or DVC would not notice when it changes and would skip ingest on later runs.

`check` compares the two (pure); `require_declared` reads both files and raises SourcesUndeclared, naming each source
and the fix, before any stage runs. `add_source_text` is the text edit behind `atelier sources add`: it inserts the
source into params.yaml and its path into dvc.yaml as lines, so that both files keep their comments and layout.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from atelier import paths
from atelier.config import ConfigError, IngestParams, load_params

SOURCES_DIR = paths.relative(paths.DEMO_SOURCE.parent)  # data/sources: a dep under it should be read by a source
PATTERN_KINDS = ("webdataset", "parquet")  # kinds whose path may be a glob or a {00000..00099} brace pattern
_MAGIC = re.compile(r"[*?\[{]")
DEPS_KEYS = ("stages", "ingest", "deps")
SOURCES_KEYS = ("ingest", "sources")


class SourcesUndeclared(ConfigError):
    """A source in params.yaml reads a path that the ingest stage's deps in dvc.yaml do not cover."""


@dataclass(frozen=True)
class Problem:
    """One disagreement: level "error" (a source DVC does not watch) or "warning" (a dep no source reads)."""

    level: str
    source: str | None  # the source's name (None for a warning)
    path: str  # the dep to add (error) or the dep nobody reads (warning), as dvc.yaml would write it
    message: str


def read_path(source) -> str:
    """The path a source reads, as given in params.yaml: the path itself, or for a glob or brace pattern (webdataset,
    parquet) the folder before the first wildcard. For `urls` it is the list file."""
    if source.kind not in PATTERN_KINDS or not _MAGIC.search(source.path):
        return source.path
    fixed = []
    for part in PurePosixPath(source.path).parts:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return str(PurePosixPath(*fixed)) if fixed else "."


def _absolute(path: str, root: Path) -> str:
    """`path` (relative to `root` unless absolute) as a normalised absolute path: no `./`, `..` or trailing slash."""
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))


def as_dep(path: str, root: Path) -> str:
    """`path` as dvc.yaml should list it: relative to `root` when inside it, else absolute; normalised."""
    absolute = _absolute(path, root)
    inside = os.path.commonpath([absolute, str(root)]) == str(root)
    return PurePosixPath(os.path.relpath(absolute, root)).as_posix() if inside else absolute


def _covers(dep: str, path: str) -> bool:
    """True when the absolute path `dep` is `path` or a folder above it."""
    return dep == path or PurePosixPath(dep) in PurePosixPath(path).parents


def covered(path: str, deps: list[str], root: Path) -> bool:
    """True when one of `deps` is `path` or a folder above it (compared as written, then with links resolved)."""
    target = _absolute(path, root)
    written = [_absolute(d, root) for d in deps]
    return any(_covers(d, target) for d in written) or any(
        _covers(os.path.realpath(d), os.path.realpath(target)) for d in written
    )


def ingest_deps(stages: dict) -> list[str]:
    """The paths in dvc.yaml's `stages.ingest.deps` (an entry is a string or a one-key mapping `path: {options}`)."""
    deps = ((stages or {}).get("ingest") or {}).get("deps") or []
    return [str(next(iter(d))) if isinstance(d, dict) else str(d) for d in deps]


def add_command(source) -> str:
    """The `atelier sources add` command line for `source`."""
    command = ["atelier", "sources", "add", source.name, source.path, "--kind", source.kind]
    if source.kind == "parquet" and source.image_column != "image":
        command += ["--image-column", source.image_column]
    return shlex.join(command)


def check(ingest: IngestParams, stages: dict, root: Path) -> list[Problem]:
    """Compare params.yaml's sources with dvc.yaml's ingest deps: an error for each source whose read path no dep
    covers, a warning for each dep under data/sources/ that no source reads."""
    root = Path(os.path.abspath(root))
    if "ingest" not in (stages or {}):
        return [Problem("error", None, "", "dvc.yaml has no stage 'ingest'; restore it from the repository")]
    deps = ingest_deps(stages)
    problems = []
    for source in ingest.sources:
        path = read_path(source)
        if not covered(path, deps, root):
            dep = as_dep(path, root)
            problems.append(
                Problem(
                    "error",
                    source.name,
                    dep,
                    f"source '{source.name}' ({source.kind}) reads {dep}, which no dep of the ingest stage covers",
                )
            )
    sources_dir = _absolute(SOURCES_DIR, root)
    read = [_absolute(read_path(s), root) for s in ingest.sources]
    for dep in deps:
        absolute = _absolute(dep, root)
        if not _covers(sources_dir, absolute):
            continue
        if not any(_covers(absolute, r) or _covers(r, absolute) for r in read):
            problems.append(
                Problem(
                    "warning",
                    None,
                    as_dep(dep, root),
                    f"dvc.yaml: the ingest stage depends on {as_dep(dep, root)}, which no source in "
                    f"params.yaml ingest.sources reads; remove that dep, or add the source with "
                    f"`atelier sources add`",
                )
            )
    return problems


def undeclared_message(errors: list[Problem], ingest: IngestParams, dvc_yaml: Path, indent: int = 6) -> str:
    """The message of SourcesUndeclared: each source, and the fix (the dvc.yaml lines, or `atelier sources add`)."""
    if any(e.source is None for e in errors):
        return next(e.message for e in errors if e.source is None)
    by_name = {s.name: s for s in ingest.sources}
    lines = [
        f"{dvc_yaml}: the ingest stage does not depend on what these sources in params.yaml ingest.sources "
        "read, so DVC would not notice their changes and would skip ingest on later runs:"
    ]
    lines += [f"  - {e.message}" for e in errors]
    lines.append("Fix: add these lines under stages.ingest.deps in dvc.yaml:")
    lines += [f"{' ' * indent}- {_scalar(e.path)}" for e in errors]
    lines.append("or run, for each source (it adds the dep of a source that params.yaml has already):")
    lines += [f"  {add_command(by_name[e.source])}" for e in errors]
    return "\n".join(lines)


def problems(root: Path = paths.ROOT) -> list[Problem]:
    """check() on `root`/params.yaml and `root`/dvc.yaml."""
    root = Path(root)
    ingest = load_params(root / "params.yaml").ingest
    return check(ingest, load_stages(root / "dvc.yaml"), root)


def require_declared(root: Path = paths.ROOT) -> list[Problem]:
    """Raise SourcesUndeclared when a source's path is not among the ingest stage's deps; return the warnings."""
    root = Path(root)
    ingest = load_params(root / "params.yaml").ingest
    dvc_yaml = root / "dvc.yaml"
    found = check(ingest, load_stages(dvc_yaml), root)
    errors = [p for p in found if p.level == "error"]
    if errors:
        try:
            indent = sequence_end(dvc_yaml.read_text(encoding="utf-8").splitlines(keepends=True), DEPS_KEYS)[1]
        except ValueError:
            indent = 6
        raise SourcesUndeclared(undeclared_message(errors, ingest, dvc_yaml, indent))
    return [p for p in found if p.level == "warning"]


def load_stages(dvc_yaml: Path) -> dict:
    """The `stages` mapping of a dvc.yaml; ConfigError when the file is missing or not YAML."""
    try:
        data = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{dvc_yaml}: file not found; copy dvc.yaml from the repository") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{dvc_yaml}: not valid YAML: {exc}") from exc
    return data.get("stages") or {} if isinstance(data, dict) else {}


# --- the text edit behind `atelier sources add` ---------------------------------------------------------------------


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when it reads back as itself, else double-quoted (JSON is valid YAML)."""
    try:
        plain = yaml.safe_load(f"k: {value}") == {"k": value}
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)


def _content(line: str) -> tuple[int, str] | None:
    """(indent, text) of a line that holds YAML content; None for a blank or comment-only line."""
    text = line.lstrip(" ")
    if not text.strip() or text.startswith("#"):
        return None
    return len(line) - len(text), text


def sequence_end(lines: list[str], keys: tuple[str, ...]) -> tuple[int, int]:
    """Where a new item goes at the end of the block sequence under `keys` (e.g. stages > ingest > deps): the index
    of the line after the last item (after its own comments, before the comments and blank lines that follow it),
    and the indent of the items' dashes. ValueError when the layout is not a plain block sequence."""
    start, end, parent = 0, len(lines), -1
    for depth, key in enumerate(keys):
        name, last = ".".join(keys[: depth + 1]), depth == len(keys) - 1
        block = [(i, *c) for i in range(start, end) if (c := _content(lines[i])) is not None]
        child = block[0][1] if block else -1  # the indent of the keys in this block
        found = [(i, text) for i, indent, text in block if indent == child and re.match(rf"{re.escape(key)}\s*:", text)]
        if not found or child <= parent:
            raise ValueError(f"no block key '{name}'")
        at, text = found[0]
        if re.match(rf"{re.escape(key)}\s*:\s*[^\s#]", text):
            raise ValueError(f"'{name}' is written inline (flow style)")
        # the key's block ends at the next line at its indent or less (a sequence's dashes may sit at its indent)
        parent, start, end = child, at + 1, len(lines)
        for i, indent, text in block:
            if i > at and (indent < child or (indent == child and not (last and text.startswith("-")))):
                end = i
                break
    items = []  # (line, indent) of each dash in the sequence's block
    for i in range(start, end):
        content = _content(lines[i])
        if content is not None and re.match(r"-(\s|$)", content[1]):
            items.append((i, content[0]))
    if not items:
        raise ValueError(f"'{'.'.join(keys)}' has no items")
    dash = items[0][1]
    last_item = max(i for i, indent in items if indent == dash)
    after = last_item + 1
    for i in range(last_item + 1, end):
        if lines[i].strip():
            if len(lines[i]) - len(lines[i].lstrip(" ")) <= dash:
                break  # a comment at the dashes' indent or less belongs to what follows
            after = i + 1
    return after, dash


def _insert(text: str, keys: tuple[str, ...], item: list[str]) -> str:
    """`text` with the lines of `item` (the first starts with "- ", the others are indented under it) appended to
    the block sequence at `keys`."""
    lines = text.splitlines(keepends=True)
    at, dash = sequence_end(lines, keys)
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    pad = " " * dash
    lines[at:at] = [f"{pad}{item[0]}\n"] + [f"{pad}  {line}\n" for line in item[1:]]
    return "".join(lines)


def add_source_text(params_text: str, dvc_text: str | None, entry: dict, dep: str | None) -> tuple[str, str | None]:
    """params.yaml and dvc.yaml texts with `entry` appended to ingest.sources (when given) and `dep` to the ingest
    stage's deps (when given), inserted as lines. Both are read back: ValueError unless each file is exactly the old
    one plus the new item."""
    new_params = params_text
    if entry:
        first, *rest = list(entry.items())
        item = [f"- {first[0]}: {_scalar(first[1])}"] + [f"{k}: {_scalar(v)}" for k, v in rest]
        new_params = _insert(params_text, SOURCES_KEYS, item)
        _same_but_appended(params_text, new_params, SOURCES_KEYS, entry, "params.yaml")
    new_dvc = dvc_text
    if dep is not None:
        new_dvc = _insert(dvc_text, DEPS_KEYS, [f"- {_scalar(dep)}"])
        _same_but_appended(dvc_text, new_dvc, DEPS_KEYS, dep, "dvc.yaml")
    return new_params, new_dvc


def _same_but_appended(old: str, new: str, keys: tuple[str, ...], item: object, name: str) -> None:
    """ValueError unless `new` reads as `old` with `item` appended to the list at `keys`."""
    expected = copy.deepcopy(yaml.safe_load(old))
    node = expected
    for key in keys:
        node = node[key]
    node.append(item)
    if yaml.safe_load(new) != expected:
        raise ValueError(
            f"{name}: inserting into {'.'.join(keys)} as text did not give the expected YAML; edit it by hand"
        )


def add_source(root: Path, name: str, path: str, kind: str = "folder", image_column: str | None = None) -> list[str]:
    """Add a source to `root`/params.yaml ingest.sources and the path it reads to the ingest stage's deps in
    `root`/dvc.yaml, in one step, as inserted lines (comments and layout kept); return notes for the user. For a
    source already in params.yaml with this kind and path whose dep is missing, add only the dep."""
    import tempfile
    from types import SimpleNamespace

    from atelier.io import write_text

    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ConfigError(f"source name '{name}': use lowercase letters, digits, '_' and '-' only (^[a-z0-9_-]+$)")
    if image_column is not None and kind != "parquet":
        raise ConfigError(f"--image-column is for parquet sources; '{name}' is {kind}")
    params_yaml, dvc_yaml = root / "params.yaml", root / "dvc.yaml"
    ingest = load_params(params_yaml).ingest
    stages = load_stages(dvc_yaml)
    stored = as_dep(path, root)  # normalised; relative to the project when inside it
    entry: dict | None = {"name": name, "kind": kind, "path": stored}
    if image_column is not None:
        entry["image_column"] = image_column
    source = SimpleNamespace(**entry)
    notes = []
    existing = {s.name: s for s in ingest.sources}.get(name)
    if existing is not None:
        same = (
            existing.kind == kind
            and as_dep(existing.path, root) == stored
            and image_column in (None, getattr(existing, "image_column", None))
        )
        if not same:
            raise ConfigError(
                f"{params_yaml}: a source named '{name}' exists already ({existing.kind}, "
                f"{existing.path}); choose another name, or edit params.yaml to change it"
            )
        if covered(read_path(existing), ingest_deps(stages), root):
            raise ConfigError(f"source '{name}' is in params.yaml and declared in dvc.yaml already; nothing to add")
        entry, source = None, existing
    reads = read_path(source)
    dep = None if covered(reads, ingest_deps(stages), root) else as_dep(reads, root)
    notes.append(
        f"source '{name}' ({source.kind}, {source.path}): "
        + ("added to params.yaml ingest.sources" if entry else "in params.yaml ingest.sources already")
        + (
            f"; {dep} added to the ingest stage's deps in dvc.yaml"
            if dep
            else f"; {as_dep(reads, root)} is covered by an ingest dep in dvc.yaml already"
        )
    )
    try:
        params_text, dvc_text = add_source_text(
            params_yaml.read_text(encoding="utf-8"), dvc_yaml.read_text(encoding="utf-8"), entry, dep
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot add source '{name}' as text: {exc}; add it to params.yaml ingest.sources and "
            f"its path to stages.ingest.deps in dvc.yaml by hand"
        ) from None
    with tempfile.TemporaryDirectory() as tmp:  # validate the new params.yaml before writing anything
        (Path(tmp) / "params.yaml").write_text(params_text, encoding="utf-8")
        try:
            new_ingest = load_params(Path(tmp) / "params.yaml").ingest
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(Path(tmp) / "params.yaml"), str(params_yaml))) from None
    found = check(new_ingest, (yaml.safe_load(dvc_text) or {}).get("stages") or {}, root)
    if any(p.level == "error" and p.source == name for p in found):
        raise ConfigError(f"source '{name}': still not covered by the ingest stage's deps after adding it")
    notes += [f"note: {p.message}" for p in found if p.source != name]  # problems that were there before
    if dep is not None:
        write_text(dvc_yaml, dvc_text)  # dvc.yaml first: a dep no source reads is only a warning
    if entry is not None:
        write_text(params_yaml, params_text)
    if not (root / reads).exists():
        notes.append(
            f"note: {as_dep(reads, root)} does not exist yet: put the source there before the "
            f"next run (DVC stops on a missing dependency)"
        )
    return notes
