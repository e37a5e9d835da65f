"""Personal data in free text (captions, titles, creator fields): found by tested patterns and replaced by a
placeholder naming its kind, so that nothing derived from the text (training captions, manifests, cards, the
gallery) carries it.

What is found (tests/test_pii.py holds a table of true positives and true negatives for each kind):
- `email`: an address such as jane.doe@example.org (not obfuscated forms such as "jane at example dot org");
- `url`: a web address whose query string names a person or a credential (email=, name=, user=, phone=, token=,
  session=...): the whole address is replaced; other URLs are kept;
- `phone`: international numbers (+44 20 7946 0958, +1-212-555-0199, 0044 ...), North American numbers
  ((212) 555-0199, 212-555-0199, 212.555.0199) and European national numbers with a trunk 0 and 9 to 12 digits
  in groups (020 7946 0958, 07700 900123, 01 23 45 67 89, 030 1234567). Years, sizes (1920x1080), dates
  (2024-05-06, 05.06.2024), record ids, hex digests and plain numbers without separators are not phones;
- `address`: a street line: a house number then one to four capitalised words then a street type (12 Baker Street,
  221B Baker St., 1600 Pennsylvania Avenue), a house number then a Romance street type (12 rue de Rivoli, 5 via
  Roma, 10 calle Mayor), or a German or Dutch street word ending then a number (Hauptstrasse 5, Keizersgracht 123);
  UK postcodes (SW1A 1AA) and US state + ZIP (NY 10001). A bare number before a city ("75001 Paris") is not found:
  it cannot be told from a year;
- `id`: a US social security number (123-45-6789, dashed), a UK National Insurance number (QQ 12 34 56 C) and an
  IBAN whose check digits are valid (GB82 WEST 1234 5698 7654 32).

Names are not detected (that needs a language model): a creator's name stays, and so does a person named in a
caption. Overlapping findings keep the first kind in KINDS order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERSONAL_KEYS = (
    r"e-?mail|mail|name|first_?name|last_?name|full_?name|user|user_?name|uid|login|phone|tel|"
    r"mobile|address|addr|token|session|sid|auth|key|password|pwd|dob|birth_?date|ssn"
)
_STREET_TYPES = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|"
    r"Terrace|Way|Close|Crescent|Parkway|Pkwy|Highway|Hwy|Row|Mews|Gardens|Grove"
)
_US_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
    "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY"
).split()

PATTERNS: dict[str, list[re.Pattern]] = {
    "url": [
        re.compile(
            r"\bhttps?://[^\s?#<>\"']+\?[^\s<>\"']*?(?<![\w-])(?:" + _PERSONAL_KEYS + r")=[^\s<>\"']*", re.IGNORECASE
        )
    ],
    "email": [re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")],
    "id": [
        re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"),  # US SSN
        re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),  # IBAN, checked below
    ],
    "address": [
        re.compile(r"\b\d{1,5}[A-Za-z]?,? (?:[A-Z][\w'.-]*\.? ){1,4}(?:" + _STREET_TYPES + r")\b\.?"),
        re.compile(
            r"\b\d{1,5}(?:bis|ter)?,? (?:rue|avenue|av\.|boulevard|bd|place|chemin|quai|impasse|all[ée]e|"
            r"calle|avenida|plaza|paseo|via|viale|piazza|corso|rua)\b(?: [\w'’-]+){1,4}",
            re.IGNORECASE,
        ),
        re.compile(
            r"\b[A-Z][\w-]*(?:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|laan|straat|gracht|plein|kade)"
            r" \d{1,5}[a-z]?\b"
        ),
        re.compile(r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[ABD-HJLNP-UW-Z]{2}\b"),  # UK postcode
        re.compile(r"\b(?:" + "|".join(_US_STATES) + r") \d{5}(?:-\d{4})?\b"),  # US state + ZIP
    ],
    "phone": [
        re.compile(
            r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}[ .-]?(?:\(0?\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"(?![\w-])"
        ),
        re.compile(r"(?<![\w-])(?:\(\d{3}\) ?|\d{3}[-.])\d{3}[-. ]\d{4}(?![\w-])"),  # North American
        re.compile(r"(?<![\w+.-])0[1-9]\d{0,3}(?:[ .-]\d{2,8}){1,4}(?![\w.-])|(?<![\w+.-])0[1-9]\d{8,9}(?![\w.-])"),
    ],
}
KINDS = list(PATTERNS)  # the order overlapping findings are settled in
PLACEHOLDER = {kind: f"[{kind}]" for kind in KINDS}
PHONE_DIGITS = {"international": (8, 15), "national": (9, 12)}
_QUICK = re.compile(r"[\d@?]")  # every kind needs a digit, an @ or a ?: text without one is returned at once


@dataclass(frozen=True)
class Finding:
    """One piece of personal data: its kind and where it was in the original text (the text itself is not kept)."""

    kind: str
    start: int
    end: int


def _iban_valid(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97 == 1


def _accept(kind: str, pattern_index: int, text: str) -> bool:
    """Checks a regular expression cannot make: IBAN check digits, phone digit counts, not a date."""
    if kind == "id" and pattern_index == 2:
        return _iban_valid(text)
    if kind == "phone":
        digits = sum(c.isdigit() for c in text)
        if pattern_index == 0:
            low, high = PHONE_DIGITS["international"]
        elif pattern_index == 1:
            return True
        else:
            low, high = PHONE_DIGITS["national"]
            if re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", text):  # a date, not a number
                return False
        return low <= digits <= high
    return True


def find(text: str) -> list[Finding]:
    """The personal data in `text`, in order, without overlaps."""
    if not text or not _QUICK.search(text):
        return []
    taken: list[Finding] = []
    for kind in KINDS:
        for i, pattern in enumerate(PATTERNS[kind]):
            for m in pattern.finditer(text):
                start, end = m.span()
                while end > start and text[end - 1] in ".,;:)":  # trailing punctuation belongs to the sentence
                    if kind == "address" and text[end - 1] == ".":
                        break
                    end -= 1
                if any(f.start < end and start < f.end for f in taken) or not _accept(kind, i, text[start:end]):
                    continue
                taken.append(Finding(kind, start, end))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str) -> tuple[str, list[Finding]]:
    """`text` with each piece of personal data replaced by its placeholder ([email], [phone]...), and the findings."""
    findings = find(text)
    if not findings:
        return text, []
    out, at = [], 0
    for f in findings:
        out += [text[at : f.start], PLACEHOLDER[f.kind]]
        at = f.end
    out.append(text[at:])
    return "".join(out), findings


def summary(per_field: dict[str, list[Finding]]) -> str:
    """A record's redactions as `field:kind=n,kind=n;field:...` (fields and kinds sorted), "" when there are none."""
    parts = []
    for name in sorted(per_field):
        counts: dict[str, int] = {}
        for f in per_field[name]:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        if counts:
            parts.append(f"{name}:" + ",".join(f"{k}={n}" for k, n in sorted(counts.items())))
    return ";".join(parts)


def parse_summary(text: str | None) -> dict[str, dict[str, int]]:
    """The inverse of summary(): {field: {kind: n}}."""
    out: dict[str, dict[str, int]] = {}
    for part in (text or "").split(";"):
        if not part:
            continue
        name, _, kinds = part.partition(":")
        out[name] = {k: int(n) for k, _, n in (item.partition("=") for item in kinds.split(","))}
    return out
