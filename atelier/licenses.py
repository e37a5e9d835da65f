"""License normalisation to SPDX identifiers and the terms each license grants. Unknown means not allowed.

The table is explicit on purpose: a license that is not in it fails closed (decision `license_unknown`).
SPDX expressions are handled: `A OR B` takes the most permissive known choice (the licensee may choose),
`A AND B` must satisfy every part (the most restrictive terms win), AND binds tighter than OR and parentheses group.
An expression that does not parse (unbalanced parentheses, a dangling operator) is unknown, and so is a URL with
other text around it: "... we do NOT grant https://creativecommons.org/licenses/by/4.0" is not CC BY.

Rights statements that museums and archives use (rightsstatements.org, and Flickr Commons' "No known copyright
restrictions") are recognised by URL (`http://rightsstatements.org/vocab/NKC/1.0/`, the `page/` variant) and by name
("No Copyright - United States", `NoC-US`), as the whole text. Each has an explicit decision in RIGHTS_STATEMENTS:
in copyright (InC*) never trains; undetermined or not evaluated (UND, CNE) is `rights_undetermined`; contractual or
other legal restrictions (NoC-CR, NoC-OKLR) are `rights_restricted`; NoC-NC is non-commercial; and where the
collection owner must choose (NKC, NoC-US) the record trains only when params.yaml's `license.policy` switch is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Terms:
    permits_training: bool
    permits_commercial: bool
    requires_attribution: bool
    share_alike: bool
    no_derivatives: bool


def _cc(nc: bool = False, nd: bool = False, sa: bool = False, by: bool = True) -> Terms:
    return Terms(True, not nc, by, sa, nd)


TERMS: dict[str, Terms] = {
    "CC0-1.0": _cc(by=False),
    "LicenseRef-PDM-1.0": _cc(by=False),  # Creative Commons Public Domain Mark 1.0 (a mark, not a license)
    "MIT": _cc(),
    "Apache-2.0": _cc(),
    "LicenseRef-All-Rights-Reserved": Terms(False, False, True, False, True),
}
for _v in ("2.0", "3.0", "4.0"):
    TERMS[f"CC-BY-{_v}"] = _cc()
    TERMS[f"CC-BY-SA-{_v}"] = _cc(sa=True)
    TERMS[f"CC-BY-NC-{_v}"] = _cc(nc=True)
    TERMS[f"CC-BY-ND-{_v}"] = _cc(nd=True)
    TERMS[f"CC-BY-NC-SA-{_v}"] = _cc(nc=True, sa=True)
    TERMS[f"CC-BY-NC-ND-{_v}"] = _cc(nc=True, nd=True)

# rightsstatements.org: code -> (id, name, terms if training were allowed, decision). The decision is one of
# "terms" (the terms decide), "policy:<switch>" (trains only when license.policy.<switch> is true) or an exclusion
# reason.
_NO_TRAINING = Terms(False, False, True, False, True)
RIGHTS_STATEMENTS: dict[str, tuple[str, str, Terms, str]] = {
    "InC": ("LicenseRef-RS-InC", "In Copyright", _NO_TRAINING, "terms"),
    "InC-OW-EU": ("LicenseRef-RS-InC-OW-EU", "In Copyright - EU Orphan Work", _NO_TRAINING, "terms"),
    "InC-EDU": ("LicenseRef-RS-InC-EDU", "In Copyright - Educational Use Permitted", _NO_TRAINING, "terms"),
    "InC-NC": ("LicenseRef-RS-InC-NC", "In Copyright - Non-Commercial Use Permitted", _NO_TRAINING, "terms"),
    "InC-RUU": (
        "LicenseRef-RS-InC-RUU",
        "In Copyright - Rights-holder(s) Unlocatable or Unidentifiable",
        _NO_TRAINING,
        "terms",
    ),
    "NoC-CR": (
        "LicenseRef-RS-NoC-CR",
        "No Copyright - Contractual Restrictions",
        _NO_TRAINING,
        "rights_restricted:contractual",
    ),
    "NoC-NC": ("LicenseRef-RS-NoC-NC", "No Copyright - Non-Commercial Use Only", _cc(nc=True), "terms"),
    "NoC-OKLR": (
        "LicenseRef-RS-NoC-OKLR",
        "No Copyright - Other Known Legal Restrictions",
        _NO_TRAINING,
        "rights_restricted:other_legal",
    ),
    "NoC-US": ("LicenseRef-RS-NoC-US", "No Copyright - United States", _cc(by=False), "policy:allow_no_copyright_us"),
    "CNE": ("LicenseRef-RS-CNE", "Copyright Not Evaluated", _NO_TRAINING, "rights_undetermined"),
    "UND": ("LicenseRef-RS-UND", "Copyright Undetermined", _NO_TRAINING, "rights_undetermined"),
    "NKC": ("LicenseRef-RS-NKC", "No Known Copyright", _cc(by=False), "policy:allow_no_known_copyright"),
}
TERMS.update({spdx: terms for spdx, _, terms, _ in RIGHTS_STATEMENTS.values()})
POLICY_SWITCHES = {
    spdx: d.removeprefix("policy:") for spdx, _, _, d in RIGHTS_STATEMENTS.values() if d.startswith("policy:")
}
EXCLUDED_STATEMENTS = {
    spdx: d for spdx, _, _, d in RIGHTS_STATEMENTS.values() if d not in ("terms",) and not d.startswith("policy:")
}
_RS_URL = re.compile(
    r"(?:https?://)?(?:www\.)?rightsstatements\.org/(?:vocab|page|data)/([a-z-]+)/1\.0/?"
    r"(?:[?#]\S*)?"
)


def _statement_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_STATEMENT_NAMES = {_statement_key(k): spdx for k, (spdx, name, _, _) in RIGHTS_STATEMENTS.items()}
_STATEMENT_NAMES |= {_statement_key(name): spdx for spdx, name, _, _ in RIGHTS_STATEMENTS.values()}
_STATEMENT_NAMES |= {_statement_key(spdx): spdx for spdx, _, _, _ in RIGHTS_STATEMENTS.values()}
_STATEMENT_NAMES |= {
    "no-known-copyright-restrictions": "LicenseRef-RS-NKC",
    "no-known-copyright-restriction": "LicenseRef-RS-NKC",
}


def rights_statement(text: str) -> str | None:
    """The id of a rightsstatements.org statement (or "No known copyright restrictions") that is the whole text."""
    t = text.strip()
    m = _RS_URL.fullmatch(t.lower())
    if m:
        return _STATEMENT_NAMES.get(_statement_key(m.group(1)))
    return _STATEMENT_NAMES.get(_statement_key(t))


_ALIASES = {
    "cc0": "CC0-1.0",
    "cc0-1.0": "CC0-1.0",
    "cc-zero": "CC0-1.0",
    "publicdomain-zero-1.0": "CC0-1.0",
    "public-domain": "LicenseRef-PDM-1.0",
    "public-domain-mark": "LicenseRef-PDM-1.0",
    "public-domain-mark-1.0": "LicenseRef-PDM-1.0",
    "pdm": "LicenseRef-PDM-1.0",
    "pdm-1.0": "LicenseRef-PDM-1.0",
    "publicdomain-mark-1.0": "LicenseRef-PDM-1.0",
    "all-rights-reserved": "LicenseRef-All-Rights-Reserved",
    "arr": "LicenseRef-All-Rights-Reserved",
    "copyright": "LicenseRef-All-Rights-Reserved",
    "licenseref-all-rights-reserved": "LicenseRef-All-Rights-Reserved",
    "mit": "MIT",
    "apache-2.0": "Apache-2.0",
}
# the whole token must be the URL (a deed or legal code page, optionally with a language or query)
_CC_URL = re.compile(
    r"(?:https?://)?(?:www\.)?creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)"
    r"(?:/[a-z0-9._-]*)*/?(?:[?#]\S*)?"
)


def _one(token: str) -> str | None:
    """Normalise one license token (no OR/AND) to an SPDX id in TERMS, or None if unknown."""
    t = token.strip()
    m = _CC_URL.fullmatch(t.lower())
    if m:
        kind, code, version = m.groups()
        if kind == "publicdomain":
            key = {"zero": "CC0-1.0", "mark": "LicenseRef-PDM-1.0"}.get(code)
            return key
        spdx = f"CC-{code.upper()}-{version}"
        return spdx if spdx in TERMS else None
    key = re.sub(r"[\s_]+", "-", t.lower())
    key = re.sub(r"^(creative-commons-|cc-)", "cc-", key)
    key = key.removesuffix("-license").removesuffix("-international")
    if key in _ALIASES:
        return _ALIASES[key]
    for spdx in TERMS:
        if spdx.lower() == key:
            return spdx
    m = re.fullmatch(r"cc-(by(?:-nc)?(?:-sa|-nd)?)-?(\d(?:\.\d)?)", key)
    if m:
        version = m.group(2) if "." in m.group(2) else m.group(2) + ".0"
        spdx = f"CC-{m.group(1).upper()}-{version}"
        return spdx if spdx in TERMS else None
    return None


def _strictest(a: Terms, b: Terms) -> Terms:
    return Terms(
        a.permits_training and b.permits_training,
        a.permits_commercial and b.permits_commercial,
        a.requires_attribution or b.requires_attribution,
        a.share_alike or b.share_alike,
        a.no_derivatives or b.no_derivatives,
    )


def _rank(t: Terms) -> tuple:
    return (
        t.permits_training,
        t.permits_commercial,
        not t.no_derivatives,
        not t.share_alike,
        not t.requires_attribution,
    )


class _Unparsable(ValueError):
    """The expression is not well formed (unbalanced parentheses, an operator without an operand)."""


def _tokens(text: str) -> list[str]:
    """Split an expression into '(', ')', 'or', 'and' and license tokens (runs of other words, e.g. `CC BY 4.0`)."""
    out: list[str] = []
    words: list[str] = []
    for word in text.replace("(", " ( ").replace(")", " ) ").split():
        if word in ("(", ")") or word.lower() in ("or", "and"):
            if words:
                out.append(" ".join(words))
                words = []
            out.append(word if word in ("(", ")") else word.lower())
        else:
            words.append(word)
    if words:
        out.append(" ".join(words))
    return out


Options = dict[Terms, str]  # each choice the expression allows: its terms -> its SPDX ids (joined by AND)


def _parse(tokens: list[str]) -> Options:
    """Recursive descent over `expr := term (OR term)*`, `term := factor (AND factor)*`, `factor := (expr) | id`.

    An unknown id has no options, so it poisons the conjunction it is in and drops out of a disjunction."""
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str | None:
        nonlocal pos
        pos += 1
        return tokens[pos - 1] if pos <= len(tokens) else None

    def expr() -> Options:
        options = dict(term())
        while peek() == "or":
            take()
            for terms, spdx in term().items():
                options.setdefault(terms, spdx)
        return options

    def term() -> Options:
        options = factor()
        while peek() == "and":
            take()
            right = factor()
            combined: Options = {}
            for a, a_spdx in options.items():
                for b, b_spdx in right.items():
                    combined.setdefault(_strictest(a, b), f"{a_spdx} AND {b_spdx}")
            options = combined  # at most 32 distinct Terms: no blow-up however long the expression
        return options

    def factor() -> Options:
        token = take()
        if token == "(":
            options = expr()
            if take() != ")":
                raise _Unparsable("unbalanced parentheses")
            return options
        if token is None or token in (")", "or", "and"):
            raise _Unparsable(f"expected a license, got {token!r}")
        spdx = _one(token)
        return {TERMS[spdx]: spdx} if spdx else {}

    options = expr()
    if pos != len(tokens):
        raise _Unparsable(f"unexpected {tokens[pos]!r}")
    return options


def _options(text: str) -> Options | None:
    """The options a licence text allows (a rights statement is one option), or None when it does not parse."""
    statement = rights_statement(text)
    if statement:
        return {TERMS[statement]: statement}
    try:
        return _parse(_tokens(text))
    except (_Unparsable, RecursionError):
        return None


def normalise(raw: str | None, url: str | None = None) -> tuple[str | None, Terms | None, str]:
    """Return (spdx_expression, terms, status) with status one of `ok`, `missing`, `unknown`, `conflict`.

    `conflict`: the license text and a recognisable license URL name different licenses (say "CC-BY-4.0" with a
    BY-NC link). Which one the rights holder meant cannot be known, so the record fails closed."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text and isinstance(url, str) and url.strip():
        text = url.strip()
    if not text:
        return None, None, "missing"
    if len(text) > 200:
        return None, None, "unknown"
    options = _options(text)
    if options is None:
        return None, None, "unknown"
    if not options:
        return None, None, "unknown"
    terms = max(options, key=_rank)
    if text != (url or "").strip() and isinstance(url, str) and url.strip():
        linked = _options(url.strip()) or {}
        named = set(options[terms].split(" AND "))
        if linked and not any(set(spdx.split(" AND ")) <= named for spdx in linked.values()):
            return None, None, "conflict"
    return options[terms], terms, "ok"


def usage_terms(per_license: dict[str, int]) -> dict:
    """Terms that follow from the licenses of the training data: the strictest of them binds the artwork."""
    unknown = sorted(spdx for part in per_license for spdx in part.split(" AND ") if spdx not in TERMS)
    if unknown:
        raise ValueError(
            f"training data lists licenses with no known terms: {unknown}; the license stage should have excluded them"
        )
    terms = [TERMS[spdx] for part in per_license for spdx in part.split(" AND ")]
    commercial = all(t.permits_commercial for t in terms)
    share_alike = sorted({p for p in per_license if any(TERMS[s].share_alike for s in p.split(" AND "))})
    attribution = sorted({p for p in per_license if any(TERMS[s].requires_attribution for s in p.split(" AND "))})
    parts = [
        "Commercial use permitted."
        if commercial
        else "Non-commercial use only: non-commercial licensed works trained the model."
    ]
    if share_alike:
        parts.append(
            f"Share-alike: the training data includes {', '.join(share_alike)} works; share adaptations "
            "under compatible terms."
        )
    if attribution:
        parts.append(f"Attribution: credit the creators listed in the attribution list ({', '.join(attribution)}).")
    return {
        "commercial_use": commercial,
        "share_alike": bool(share_alike),
        "share_alike_licenses": share_alike,
        "attribution_required": bool(attribution),
        "attribution_licenses": attribution,
        "statement": " ".join(parts),
    }
