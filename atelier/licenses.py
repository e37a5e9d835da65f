"""License normalisation to SPDX identifiers and the terms each license grants. Unknown means not allowed.

The table is explicit on purpose: a license that is not in it fails closed (decision `license_unknown`).
SPDX expressions are handled: `A OR B` takes the most permissive known choice (the licensee may choose),
`A AND B` must satisfy every part (the most restrictive terms win), AND binds tighter than OR and parentheses group.
An expression that does not parse (unbalanced parentheses, a dangling operator) is unknown, and so is a URL with
other text around it: "... we do NOT grant https://creativecommons.org/licenses/by/4.0" is not CC BY.
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

_ALIASES = {
    "cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0", "cc-zero": "CC0-1.0", "publicdomain-zero-1.0": "CC0-1.0",
    "public-domain": "LicenseRef-PDM-1.0", "public-domain-mark": "LicenseRef-PDM-1.0",
    "public-domain-mark-1.0": "LicenseRef-PDM-1.0", "pdm": "LicenseRef-PDM-1.0", "pdm-1.0": "LicenseRef-PDM-1.0",
    "publicdomain-mark-1.0": "LicenseRef-PDM-1.0",
    "all-rights-reserved": "LicenseRef-All-Rights-Reserved", "arr": "LicenseRef-All-Rights-Reserved",
    "copyright": "LicenseRef-All-Rights-Reserved", "licenseref-all-rights-reserved": "LicenseRef-All-Rights-Reserved",
    "mit": "MIT", "apache-2.0": "Apache-2.0",
}
# the whole token must be the URL (a deed or legal code page, optionally with a language or query)
_CC_URL = re.compile(r"(?:https?://)?(?:www\.)?creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)"
                     r"(?:/[a-z0-9._-]*)*/?(?:[?#]\S*)?")


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
    return Terms(a.permits_training and b.permits_training, a.permits_commercial and b.permits_commercial,
                 a.requires_attribution or b.requires_attribution, a.share_alike or b.share_alike,
                 a.no_derivatives or b.no_derivatives)


def _rank(t: Terms) -> tuple:
    return (t.permits_training, t.permits_commercial, not t.no_derivatives, not t.share_alike,
            not t.requires_attribution)


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
    try:
        options = _parse(_tokens(text))
    except (_Unparsable, RecursionError):
        return None, None, "unknown"
    if not options:
        return None, None, "unknown"
    terms = max(options, key=_rank)
    if text != (url or "").strip() and isinstance(url, str) and url.strip():
        try:
            linked = _parse(_tokens(url.strip()))
        except (_Unparsable, RecursionError):
            linked = {}
        named = set(options[terms].split(" AND "))
        if linked and not any(set(spdx.split(" AND ")) <= named for spdx in linked.values()):
            return None, None, "conflict"
    return options[terms], terms, "ok"
