"""License normalisation to SPDX identifiers and the terms each license grants. Unknown means not allowed.

The table is explicit on purpose: a license that is not in it fails closed (decision `license_unknown`).
SPDX expressions are handled: `A OR B` takes the most permissive known choice (the licensee may choose),
`A AND B` must satisfy every part (the most restrictive terms win).
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
_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)")


def _one(token: str) -> str | None:
    """Normalise one license token (no OR/AND) to an SPDX id in TERMS, or None if unknown."""
    t = token.strip().strip("()").strip()
    m = _CC_URL.search(t.lower())
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


def normalise(raw: str | None, url: str | None = None) -> tuple[str | None, Terms | None, str]:
    """Return (spdx_expression, terms, status) with status one of `ok`, `missing`, `unknown`."""
    text = (raw or "").strip()
    if not text and (url or "").strip():
        text = url.strip()
    if not text:
        return None, None, "missing"
    if len(text) > 200:
        return None, None, "unknown"
    alternatives = re.split(r"\s+or\s+", text, flags=re.IGNORECASE)
    options: list[tuple[str, Terms]] = []
    for alt in alternatives:
        parts = re.split(r"\s+and\s+", alt, flags=re.IGNORECASE)
        ids = [_one(p) for p in parts]
        if any(i is None for i in ids):
            continue  # an unknown alternative cannot be chosen; an unknown conjunct poisons its alternative
        terms = TERMS[ids[0]]
        for i in ids[1:]:
            terms = _strictest(terms, TERMS[i])
        options.append((" AND ".join(ids), terms))
    if not options:
        return None, None, "unknown"
    spdx, terms = max(options, key=lambda o: _rank(o[1]))
    return spdx, terms, "ok"
