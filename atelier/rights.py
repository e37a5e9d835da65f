"""The rights policy, in one place: who a creator is, who opted out, and whether a record may train.

Used by the license stage, the duplicate groups it decides, the audits, takedown and prompt refusal alike.

- **Identity.** Names are compared in one normal form (`normalise_name`): Unicode NFKC, case-folded, accents folded
  (ø, ł, ß, æ, đ ... too), Cyrillic and Greek look-alike letters read as the Latin ones, invisible characters
  dropped, punctuation and spacing normalised. "Zoë Müller", its NFD spelling, "Ｚｏｅ Ｍｕｌｌｅｒ", "zoe-muller" and
  "ZOË MÜLLER" are one person.
- **Aliases.** `policy/opt_out.csv` (columns kind,value,reason,added[,aliases]) may list, in `aliases`, other names,
  handles (`@zmuller`) and profile URLs of a creator, separated by `|`. A record whose creator is any of them, or
  whose source URL is under a listed profile URL or names a listed handle, is that creator's.
- **Decision** (`decide`): the record's licence terms and whether it may train, with the reason.
- **Prompts** (`prompt_refusal`): whether a prompt names an opted-out creator, hard to evade and rarely wrong.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from atelier.config import PolicyParams
from atelier.licenses import EXCLUDED_STATEMENTS, POLICY_SWITCHES, normalise

# --- the normal form ------------------------------------------------------------------------------------------------

# letters that NFKD does not split into a base letter and a mark (after case-folding)
_LETTERS = {
    "ø": "o",
    "ł": "l",
    "đ": "d",
    "ð": "d",
    "þ": "th",
    "æ": "ae",
    "œ": "oe",
    "ħ": "h",
    "ŧ": "t",
    "ı": "i",
    "ŀ": "l",
    "ĸ": "k",
    "ŋ": "n",
    "ß": "ss",
    "ſ": "s",
}
# Cyrillic and Greek letters that look like Latin ones (lower case: the text is case-folded first; some pairs only
# look alike in upper case, as В/B or Н/H)
_HOMOGLYPHS = {
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ѕ": "s",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "һ": "h",
    "ӏ": "l",
    "ɡ": "g",
    "ɩ": "i",
    "α": "a",
    "β": "b",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "ω": "w",
    "ϲ": "c",
}
_FOLD = str.maketrans({**_LETTERS, **_HOMOGLYPHS})
_APOSTROPHES = "'’ʼ‘`´"


def _fold(text: str) -> str:
    """NFKC, case-folded, look-alike and accented letters read as plain Latin ones, invisible characters dropped."""
    text = unicodedata.normalize("NFKC", str(text)).casefold().translate(_FOLD)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Me", "Cf")).translate(_FOLD)


def normalise_name(name: object) -> str:
    """The normal form of a creator name: folded (see _fold), apostrophes dropped, other punctuation and spacing
    made one space. Two spellings of one name have the same normal form."""
    text = _fold("" if name is None else name)
    text = text.translate(str.maketrans("", "", _APOSTROPHES))
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def compact(name: object) -> str:
    """The normal form without spaces: "Zoe Muller", "ZoeMuller" and "zoe_muller" are all "zoemuller"."""
    return normalise_name(name).replace(" ", "")


def normalise_url(url: object) -> str:
    """A URL for matching: folded, no scheme, no `www.`, no query or fragment, no trailing slash."""
    text = _fold("" if url is None else url).strip()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.sub(r"^www\.", "", text)
    return re.split(r"[?#]", text, maxsplit=1)[0].rstrip("/")


def _handle(value: str) -> str:
    return compact(value.strip().lstrip("@"))


def _is_url(value: str) -> bool:
    return bool(re.match(r"^(?:[a-z][a-z0-9+.-]*://|www\.)", value.strip(), re.IGNORECASE)) or (
        "/" in value and "." in value.split("/")[0] and " " not in value.strip()
    )


# --- CSV cells (the opt-out list is a file people open in spreadsheets) ---------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting with one of these


def csv_cell(text: str) -> str:
    """A value as written to a CSV people open in spreadsheets: a leading formula character gets a `'` prefix."""
    return "'" + text if text.startswith(FORMULA_START) else text


def from_csv_cell(text: str) -> str:
    """Inverse of csv_cell: the `'` that csv_cell added is dropped (a name that merely starts with `'` is kept)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


# --- the opt-out list -----------------------------------------------------------------------------------------------


@dataclass
class OptOuts:
    """Who and what opted out. `creator`: normal forms of the listed names; `names`: every name and alias (normal
    form and compact form) -> the listed creator; `handles` and `urls` -> the listed creator."""

    creator: set[str] = field(default_factory=set)
    record_id: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def add_creator(self, name: str, aliases: list[str] = ()) -> None:
        """List a creator with their other names, handles (@name) and profile URLs."""
        key = normalise_name(name)
        if not key:
            raise ValueError(f"a creator's name has no letters or digits: {name!r}")
        self.creator.add(key)
        german = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})  # Müller is also written Mueller
        spelled = [unicodedata.normalize("NFC", a).casefold().translate(german) for a in [name, *aliases]]
        for alias in [name, *aliases, *spelled]:
            alias = alias.strip()
            if not alias:
                continue
            if alias.startswith("@"):
                self.handles[_handle(alias)] = key
            elif _is_url(alias):
                self.urls[normalise_url(alias)] = key
            else:
                self.names[normalise_name(alias)] = key
                self.names.setdefault(compact(alias), key)

    def __getitem__(self, kind: str) -> set[str]:  # read_opt_outs(...)["creator"], as callers wrote it before
        return {"creator": self.creator, "record_id": self.record_id}[kind]


def opt_outs_of(
    creators: list[str] = (), record_ids: list[str] = (), aliases: dict[str, list[str]] | None = None
) -> OptOuts:
    """An OptOuts built in memory (tests, tools): creators by name, each with its aliases, and record ids."""
    out = OptOuts(record_id=set(record_ids))
    for name in creators:
        out.add_creator(name, (aliases or {}).get(name, []))
    return out


def read_opt_outs(path: Path) -> OptOuts:
    """Read policy/opt_out.csv (columns kind,value,reason,added and, optionally, aliases separated by `|`)."""
    out = OptOuts()
    if not path.exists():
        return out
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            kind, value = (row.get("kind") or "").strip(), from_csv_cell((row.get("value") or "").strip())
            aliases = [from_csv_cell(a.strip()) for a in (row.get("aliases") or "").split("|") if a.strip()]
            if kind not in ("creator", "record_id") or not value:
                raise ValueError(f"{path}: line {n}: kind must be 'creator' or 'record_id' with a value, got {row}")
            if kind == "record_id":
                out.record_id.add(value)
                continue
            try:
                out.add_creator(value, aliases)
            except ValueError as exc:
                raise ValueError(f"{path}: line {n}: {exc}") from None
    return out


def _name_candidates(creator: str) -> list[str]:
    """The whole creator field, each of several creators (`;`, `&`, ` and `, `/`, `,`), and "Last, First" reversed."""
    text = str(creator or "")
    out = [text]
    if text.count(",") == 1:
        last, first = text.split(",")
        out.append(f"{first} {last}")
    out += re.split(r"\s*(?:[;&/,+]|\band\b|\bund\b|\bet\b)\s*", text)
    return [c for c in out if c.strip()]


def identify(record: dict, opt_outs: OptOuts) -> str | None:
    """The listed creator a record belongs to (normal form), by its creator field or source URL, or None."""
    for candidate in _name_candidates(record.get("creator") or ""):
        stripped = candidate.strip()
        if stripped.startswith("@") and _handle(stripped) in opt_outs.handles:
            return opt_outs.handles[_handle(stripped)]
        if _is_url(stripped) and _under(normalise_url(stripped), opt_outs.urls):
            return _under(normalise_url(stripped), opt_outs.urls)
        for key in (normalise_name(candidate), compact(candidate)):
            if key in opt_outs.names:
                return opt_outs.names[key]
            if key in opt_outs.handles:
                return opt_outs.handles[key]
    for column in ("source_url", "creator_url"):
        url = normalise_url(record.get(column) or "")
        if not url:
            continue
        if hit := _under(url, opt_outs.urls):
            return hit
        for segment in url.split("/")[1:]:  # a handle as a path segment: example.org/@zmuller or example.org/zmuller
            if segment.startswith("@") or len(segment) >= 4:
                key = _handle(segment)
                if key in opt_outs.handles:
                    return opt_outs.handles[key]
    return None


def _under(url: str, profiles: dict[str, str]) -> str | None:
    for profile, creator in profiles.items():
        if url == profile or url.startswith(profile + "/"):
            return creator
    return None


# --- the decision for one record ------------------------------------------------------------------------------------

LICENSE_FLAGS = (  # the boolean columns of the decision
    "permits_training",
    "permits_commercial",
    "requires_attribution",
    "share_alike",
    "no_derivatives",
    "opted_out",
)
LICENSE_COLUMNS = ["license_spdx", *LICENSE_FLAGS, "decision", "reason"]


def decide(record: dict, policy: PolicyParams, opt_outs: OptOuts) -> dict:
    """The license columns for one record: its normalised terms, and whether it may train (with the reason)."""
    if isinstance(opt_outs, dict):  # {"creator": {names}, "record_id": {ids}}, as callers passed it before OptOuts
        opt_outs = opt_outs_of(
            sorted(c for c in opt_outs.get("creator", ()) if normalise_name(c)), opt_outs.get("record_id", ())
        )
    spdx, terms, status = normalise(record.get("license_raw"), record.get("license_url"))
    out = {
        "license_spdx": spdx,
        "permits_training": False,
        "permits_commercial": False,
        "requires_attribution": True,
        "share_alike": False,
        "no_derivatives": False,
        "opted_out": False,
    }
    if terms is not None:
        out.update(
            permits_training=terms.permits_training,
            permits_commercial=terms.permits_commercial,
            requires_attribution=terms.requires_attribution,
            share_alike=terms.share_alike,
            no_derivatives=terms.no_derivatives,
        )
    parts = spdx.split(" AND ") if spdx else []
    switches = [POLICY_SWITCHES[p] for p in parts if p in POLICY_SWITCHES]
    reason = None
    if identify(record, opt_outs) is not None:
        reason = "opted_out:creator"
    elif record["record_id"] in opt_outs.record_id:
        reason = "opted_out:record"
    elif bool(record.get("noai")):
        reason = "opted_out:noai_flag"
    elif status == "missing":
        reason = "license_missing"
    elif status == "unknown":
        reason = "license_unknown"
    elif status == "conflict":
        reason = "license_conflict"
    elif any(p in EXCLUDED_STATEMENTS for p in parts):
        reason = next(EXCLUDED_STATEMENTS[p] for p in parts if p in EXCLUDED_STATEMENTS)
    elif any(not getattr(policy, s) for s in switches):
        reason = f"rights_needs_policy:{next(s for s in switches if not getattr(policy, s))}"
    elif not out["permits_training"]:
        reason = "license_forbids:training"
    elif policy.commercial and not out["permits_commercial"]:
        reason = "license_forbids:non_commercial"
    elif out["no_derivatives"] and not policy.allow_no_derivatives:
        reason = "license_forbids:no_derivatives"
    elif out["share_alike"] and not policy.allow_share_alike:
        reason = "license_forbids:share_alike"
    elif out["requires_attribution"] and not attributable(record):
        reason = "attribution_impossible"
    out["opted_out"] = bool(reason and reason.startswith("opted_out"))
    out["decision"] = "exclude" if reason else "train"
    out["reason"] = reason or f"allowed:{spdx}"
    return out


def attributable(record: dict) -> bool:
    """A record can be credited: by its creator, or failing that by its source URL or title."""
    return any(str(record.get(k) or "").strip() for k in ("creator", "source_url", "title"))


# --- prompts --------------------------------------------------------------------------------------------------------

# Surnames that are also everyday English words: alone, they are refused only where they name someone ("by Green",
# "in the style of Green", "Green's"), so that "a green spiral composition" is still a prompt.
COMMON_WORDS = frozenset(
    """
    green brown white black gray grey rose stone wood woods hill hills moon sun rain snow frost winter summer spring
    day knight king bird fox wolf lamb bell field fields river lake brook park bush reed rice bishop cook baker
    miller smith mason potter carpenter turner hunter fisher archer shepherd young long short small little sharp
    strong wise bright gold silver steel iron glass pearl star storm cloud sky shadow light dark love hope faith joy
    grace may june april august north south west east ford bridge hall house church lane street marsh moss heath ash
    oak pine birch thorn holly ivy lily violet hazel olive berry root leaf branch flower bloom dawn dusk night waters
    sand clay flint rock cliff shore bay banks bank coast sea wave fish crane swan drake hawk finch sparrow robin crow
    raven heron bear hare buck hart stag bull steer cross rivers price page rich best good sweet gray golden blue red
    wall walls gates gate well wells castle tower rowe cole coal lord noble bond money cash bloom field forest brook
    sharp swift fry cage hay ball marble glass garden gardner march hart green""".split()
)
# Words that make the next word a name: "by X", "after X", "like X", "à la X", "(in the style) of X".
_BEFORE_NAME = {"by", "after", "like", "la", "painter", "artist", "illustrator", "photographer", "designer"}
_OF_NAME = {"style", "manner", "school", "work", "works", "spirit", "tradition", "vein", "paintings", "painting"}
_DIGITS = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t"})


def _prompt_tokens(prompt: str) -> tuple[list[str], list[bool]]:
    """(words, possessive flags) of a prompt in the normal form; digits inside words read as letters (z0e -> zoe);
    a possessive `'s` sets the flag of the word before it."""
    text = _fold(prompt)
    for a in _APOSTROPHES:
        text = text.replace(a, "'")
    text = re.sub(r"'(?!s\b)", "", text)  # O'Keeffe -> okeeffe, as in normalise_name; Green's keeps its 's
    tokens: list[str] = []
    flags: list[bool] = []
    for word in re.findall(r"'s\b|[^\W_]+", text):
        if word == "'s":
            if flags:
                flags[-1] = True
            continue
        tokens.append(word.translate(_DIGITS) if re.search(r"[a-z]", word) else word)
        flags.append(False)
    return tokens, flags


def _names_of(opt_outs: OptOuts) -> dict[str, list[list[str]]]:
    """creator -> each of its names (the listed one, its aliases and their joined forms) as a list of words."""
    out: dict[str, list[list[str]]] = {}
    for alias, creator in sorted(opt_outs.names.items()):
        out.setdefault(creator, []).append(alias.split())
    return out


def _naming_context(tokens: list[str], flags: list[bool], i: int) -> bool:
    """Does the word at i name someone: "by X", "after X", "like X", "in the style of X", "X's"?"""
    before = tokens[i - 1] if i else ""
    if before == "of":
        return i < 2 or tokens[i - 2] in _OF_NAME
    return flags[i] or before in _BEFORE_NAME


def prompt_refusal(prompt: str, opt_outs: OptOuts) -> str | None:
    """The opted-out creator a prompt names, or None. Caught: the full name or an alias in any spelling (accents,
    full-width, look-alike letters, digits for letters), the name written joined ("ZoeMuller"), initials with the
    surname ("Z. Muller"), a handle or profile URL, and the surname alone when it is 4+ letters and not a common
    English word; a short or common-word surname ("Green") only where it names someone ("by Green", "Green's")."""
    tokens, flags = _prompt_tokens(prompt)
    joined = set(tokens)
    text = " ".join(tokens)
    url_text = normalise_url(prompt)
    for creator, names in _names_of(opt_outs).items():
        for name in names:
            if not name:
                continue
            if f" {' '.join(name)} " in f" {text} ":
                return creator
            if len(name) > 1 and len("".join(name)) >= 6 and any("".join(name) in t for t in joined):
                return creator
            surname = name[-1]
            common = surname in COMMON_WORDS or len(surname) < 4
            for i, token in enumerate(tokens):
                if token != surname:
                    continue
                if not common or _naming_context(tokens, flags, i):
                    return creator
                initials = tokens[max(0, i - len(name) + 1) : i]  # "Z. Muller", "Z A Muller"
                if (
                    len(name) > 1
                    and initials
                    and all(len(t) == 1 for t in initials)
                    and initials[0] == name[0][0]
                    and re.search(
                        rf"\b{re.escape(name[0][0])}\s*\.\s*(?:\w\s*\.\s*)*{re.escape(surname)}\b", _fold(prompt)
                    )
                ):
                    return creator
            if len(name) > 1 and name[0][0] + surname in joined and len(surname) >= 4 and not common:
                return creator  # "zmuller"
    for handle, creator in opt_outs.handles.items():
        if handle in joined and (len(handle) >= 4 or f"@{handle}" in _fold(prompt)):
            return creator
    for url, creator in opt_outs.urls.items():
        if url and url in url_text:
            return creator
    return None


# --- takedown: one creator, by any name ------------------------------------------------------------------------------


def creator_alone(name: str, listed: OptOuts | None = None) -> OptOuts:
    """An OptOuts holding only the named creator, with every alias, handle and profile URL `listed` gives them."""
    listed = listed or OptOuts()
    key = listed.names.get(normalise_name(name), normalise_name(name))
    return opt_outs_of(
        [name],
        aliases={
            name: [a for a, c in listed.names.items() if c == key]
            + [f"@{h}" for h, c in listed.handles.items() if c == key]
            + [u for u, c in listed.urls.items() if c == key]
        },
    )


def creator_matches(records: list[dict], name: str, listed: OptOuts | None = None) -> list[bool]:
    """For each record, whether it is the named creator's (any spelling, or an alias `listed` gives them)."""
    who = creator_alone(name, listed)
    return [identify(r, who) is not None for r in records]
