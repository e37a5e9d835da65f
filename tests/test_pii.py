"""atelier.pii: a table of true positives and true negatives for each kind of personal data."""

import pytest

from atelier.demo import build_demo
from atelier.pii import find, parse_summary, redact, summary

POSITIVES = [  # (text, the kind found, the exact piece replaced)
    ("write to jane.doe@example.org today", "email", "jane.doe@example.org"),
    ("J.Smith+art@mail.co.uk.", "email", "J.Smith+art@mail.co.uk"),
    (
        "see https://shop.example.com/p?id=4&email=jane%40x.org for the print",
        "url",
        "https://shop.example.com/p?id=4&email=jane%40x.org",
    ),
    ("profile http://example.net/u?user=jdoe", "url", "http://example.net/u?user=jdoe"),
    ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
    ("tel. +1-212-555-0199", "phone", "+1-212-555-0199"),
    ("Tel: +33 (0)1 23 45 67 89", "phone", "+33 (0)1 23 45 67 89"),
    ("0044 20 7946 0958", "phone", "0044 20 7946 0958"),
    ("(212) 555-0199", "phone", "(212) 555-0199"),
    ("ring 212.555.0199", "phone", "212.555.0199"),
    ("studio 020 7946 0958", "phone", "020 7946 0958"),
    ("mobile 07700 900123", "phone", "07700 900123"),
    ("appelez le 01 23 45 67 89", "phone", "01 23 45 67 89"),
    ("Büro 030 1234567", "phone", "030 1234567"),
    ("0612345678", "phone", "0612345678"),
    ("she lives at 221B Baker Street, London", "address", "221B Baker Street"),
    ("1600 Pennsylvania Avenue", "address", "1600 Pennsylvania Avenue"),
    ("at 12 High St. on Sunday", "address", "12 High St."),
    ("12 rue de Rivoli", "address", "12 rue de Rivoli"),
    ("wohnt in der Hauptstraße 5", "address", "Hauptstraße 5"),
    ("Keizersgracht 123", "address", "Keizersgracht 123"),
    ("London SW1A 1AA", "address", "SW1A 1AA"),
    ("New York, NY 10001", "address", "NY 10001"),
    ("SSN 123-45-6789", "id", "123-45-6789"),
    ("NI number AB 12 34 56 C", "id", "AB 12 34 56 C"),
    ("pay GB82 WEST 1234 5698 7654 32 please", "id", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN DE89370400440532013000", "id", "DE89370400440532013000"),
]

NEGATIVES = [  # no personal data (or none these patterns claim to find)
    "a red grid composition",
    "Red Grid No. 17",
    "painted in 1920",
    "1920x1080 pixels",
    "3840 x 2160",
    "1889-1890, oil on canvas",
    "exhibited 2024-05-06",
    "dated 05.06.2024",
    "on 12/03/1998",
    "record 62fe59eb0cb32c744d0b6a8ffffe964174bae14176de08ac2ae437fd37c0428b",
    "art_0001.png",
    "sha256 0123456789abcdef0123456789abcdef",
    "edition of 250",
    "ISBN 978-3-16-148410-0",
    "$1,000,000",
    "52.3676, 4.9041",
    "+52.37",
    "version 0.2.0",
    "see https://example.org/works?id=42&page=3",
    "IBAN GB00 WEST 1234 5698 7654 32",
    "No. 10 in blue",
    "Symphony No. 5 in C minor",
    "a 3 D print",
    "the @ sign",
    "Jane Doe",
    "Study 12 in Blue",
    "Opus 12 in B minor",
    "cat 000-12-3456",
]


@pytest.mark.parametrize("text,kind,piece", POSITIVES)
def test_true_positives(text, kind, piece):
    found = find(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [(kind, piece)]
    redacted, _ = redact(text)
    assert piece not in redacted and f"[{kind}]" in redacted


@pytest.mark.parametrize("text", NEGATIVES)
def test_true_negatives(text):
    assert find(text) == [] and redact(text) == (text, [])


def test_several_in_one_caption_and_the_summary_keeps_no_data():
    text = "Portrait sent by jane@example.org, call 020 7946 0958 or +1 212 555 0199"
    redacted, findings = redact(text)
    assert redacted == "Portrait sent by [email], call [phone] or [phone]"
    line = summary({"caption": findings, "title": []})
    assert line == "caption:email=1,phone=2" and parse_summary(line) == {"caption": {"email": 1, "phone": 2}}
    assert parse_summary("") == {}


def test_demo_metadata_has_no_personal_data():
    files, _, _ = build_demo(7, 2, 64)
    for f in files:
        for key in ("title", "creator", "caption"):
            assert find(str(f.meta.get(key) or "")) == [], (f.file_name, key, f.meta.get(key))
