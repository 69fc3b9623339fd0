"""Validators: the second opinion after a regex match.

A regex alone cannot tell a card number from an order number or an AWS secret from a git hash.
Each validator receives the exact matched bytes, up to `context_before` bytes that precede the
match (for keyword checks), and the detector's `params`, and returns True to keep the finding.

Validators must be pure and deterministic (the streaming contract relies on a finding depending
only on the bytes around it), must never raise on odd input (they see attacker-controlled
bytes), and must never log or embed the bytes they are given.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import phonenumbers

Validator = Callable[[bytes, bytes, Mapping[str, Any]], bool]

_NON_DIGIT = re.compile(rb"[^0-9]")
_NON_ALNUM = re.compile(rb"[^A-Za-z0-9]")


# --------------------------------------------------------------------------- payment cards

# (prefix lower, prefix upper, number of prefix digits, allowed lengths): the major issuer
# ranges. A number outside every range is not a card, whatever its Luhn digit says.
_CARD_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),                      # Visa
    (51, 55, 2, frozenset({16})),                            # Mastercard
    (2221, 2720, 4, frozenset({16})),                        # Mastercard 2-series
    (34, 34, 2, frozenset({15})),                            # American Express
    (37, 37, 2, frozenset({15})),                            # American Express
    (6011, 6011, 4, frozenset(range(16, 20))),               # Discover
    (644, 649, 3, frozenset(range(16, 20))),                 # Discover
    (65, 65, 2, frozenset(range(16, 20))),                   # Discover
    (3528, 3589, 4, frozenset(range(16, 20))),               # JCB
    (300, 305, 3, frozenset(range(14, 20))),                 # Diners Club
    (36, 36, 2, frozenset(range(14, 20))),                   # Diners Club
    (38, 39, 2, frozenset(range(14, 20))),                   # Diners Club
    (62, 62, 2, frozenset(range(16, 20))),                   # UnionPay
    (50, 50, 2, frozenset(range(12, 20))),                   # Maestro
    (56, 58, 2, frozenset(range(12, 20))),                   # Maestro
    (67, 67, 2, frozenset(range(12, 20))),                   # Maestro
)


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check digit test."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _issuer_ok(digits: str) -> bool:
    return any(
        lo <= int(digits[:n]) <= hi and len(digits) in lengths
        for lo, hi, n, lengths in _CARD_RANGES
    )


def luhn(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """A payment card: 12-19 digits, a known issuer prefix and length, a valid Luhn digit,
    and not one digit repeated (test-pattern noise)."""
    digits = _NON_DIGIT.sub(b"", match).decode("ascii")
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return _issuer_ok(digits) and luhn_ok(digits)


# --------------------------------------------------------------------------- US SSN

# Numbers the SSA never issued but that are printed everywhere as examples.
_SSN_EXAMPLES = frozenset({"078051120", "219099999", "123456789"})


def us_ssn(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """Valid SSN ranges only: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    digits = _NON_DIGIT.sub(b"", match).decode("ascii")
    if len(digits) != 9 or digits in _SSN_EXAMPLES:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area != 0 and area != 666 and area < 900 and group != 0 and serial != 0


# --------------------------------------------------------------------------- IBAN

# Registered IBAN lengths per country (ISO 13616 registry), enough to reject the random
# "two letters, two digits, some alphanumerics" strings that pass mod 97 one time in 97.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TL": 23, "TN": 24, "TR": 26, "UA": 29,
    "VA": 22, "VG": 24, "XK": 20,
}


def iban_mod97_ok(iban: str) -> bool:
    """ISO 7064 mod 97-10: move the first four characters to the end, letters to 10..35."""
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def iban(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """An IBAN of a known country with that country's length and a valid mod-97 checksum."""
    text = _NON_ALNUM.sub(b"", match).decode("ascii").upper()
    expected = IBAN_LENGTHS.get(text[:2])
    if expected is None or len(text) != expected or text[2:4] in ("00", "01", "99"):
        return False                  # ISO 13616 never issues check digits 00, 01 or 99
    return iban_mod97_ok(text)


# --------------------------------------------------------------------------- JWT

def _b64url_json(part: bytes) -> Any:
    padded = part + b"=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def jwt(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """Three base64url parts; the header is a JSON object with a string "alg" and the payload
    is a JSON object. (Anything that merely looks like eyJ...eyJ... is not enough.)"""
    parts = match.split(b".")
    if len(parts) != 3:
        return False
    try:
        header = _b64url_json(parts[0])
        payload = _b64url_json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return False
    return (
        isinstance(header, dict)
        and isinstance(header.get("alg"), str)
        and isinstance(payload, dict)
    )


# --------------------------------------------------------------------------- entropy

def shannon_entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte."""
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def entropy(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """Random-looking enough: at least `min_entropy` bits per byte (default 3.5).

    Used for tokens with a fixed prefix, to drop placeholders such as sk-xxxxxxxx...."""
    return shannon_entropy(match) >= float(params.get("min_entropy", 3.5))


# --------------------------------------------------------------------------- AWS secret key

_AWS_KEYWORDS = re.compile(rb"aws|secret|access[_ -]?key", re.IGNORECASE)


def aws_secret(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """40 base64 characters are everywhere (hashes, base64 blobs); an AWS secret key is one
    that (1) has an AWS/secret/access-key keyword in the bytes just before it, (2) mixes
    upper case, lower case and digits, and (3) has high entropy (`min_entropy`, default 4.0).
    A hex SHA-1 fails (2) and (3)."""
    if not _AWS_KEYWORDS.search(context):
        return False
    if not (re.search(rb"[A-Z]", match) and re.search(rb"[a-z]", match)
            and re.search(rb"[0-9]", match)):
        return False
    return shannon_entropy(match) >= float(params.get("min_entropy", 4.0))


# --------------------------------------------------------------------------- phone

def phone(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """A number libphonenumber calls valid. "+..." numbers are parsed as international;
    national formats use `region` (the engine's phone_region, "US" by default)."""
    region = str(params.get("region", "US")).upper()
    try:
        number = phonenumbers.parse(match.decode("ascii"), region)
    except (phonenumbers.NumberParseException, UnicodeDecodeError):
        return False
    return phonenumbers.is_valid_number(number)


# --------------------------------------------------------------------------- URL password

_PLACEHOLDER_PASSWORDS = frozenset({
    b"password", b"passwd", b"pass", b"pwd", b"secret", b"xxx", b"xxxx", b"xxxxxx",
    b"xxxxxxxx", b"changeme", b"yourpassword", b"your_password", b"mypassword",
})
_URL_USERINFO = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^:@]*:([^@]*)@")


def url_password(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """A real-looking password in scheme://user:password@host: not a placeholder, not a
    template variable (${X}, {{x}}, %(x)s, $X), not one character repeated (****)."""
    m = _URL_USERINFO.match(match)
    if not m:
        return False
    password = m.group(1)
    if not password or len(set(password)) == 1:
        return False
    if password.lower() in _PLACEHOLDER_PASSWORDS:
        return False
    return password[:1] not in (b"$", b"{", b"%")


# --------------------------------------------------------------------------- email

_FILE_SUFFIXES = frozenset({
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"bmp", b"tif", b"tiff",
    b"css", b"js", b"ts", b"json", b"map", b"html", b"py", b"rb", b"go", b"md", b"txt",
})


_URL_PASSWORD_BEFORE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/]*:\Z")


def email(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """An address whose top-level "domain" is not a file suffix (icon@2x.png, a@b.min.js),
    and not the "password@host" tail of scheme://user:password@host (secret.url_password
    reports that one)."""
    if _URL_PASSWORD_BEFORE.search(context):
        return False
    _, _, domain = match.rpartition(b"@")
    tld = domain.rsplit(b".", 1)[-1].lower()
    return tld not in _FILE_SUFFIXES


# --------------------------------------------------------------------------- US ITIN

def us_itin(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """An ITIN: area 9XX, group 50-65, 70-88, 90-92 or 94-99 (the IRS ranges), serial not
    0000. (Group 89 and 93 are not issued; 00-49 would be an invalid SSN, not an ITIN.)"""
    digits = _NON_DIGIT.sub(b"", match).decode("ascii")
    if len(digits) != 9 or digits[0] != "9":
        return False
    group = int(digits[3:5])
    ok_group = 50 <= group <= 65 or 70 <= group <= 88 or 90 <= group <= 92 or 94 <= group <= 99
    return ok_group and digits[5:] != "0000"


# --------------------------------------------------------------------------- IP addresses

_VERSION_BEFORE = re.compile(rb"(?:\bv|version|ver\.?|release|build|rev)[\s:=]*\Z", re.IGNORECASE)


def ip_address(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """An address the `ipaddress` module accepts, not a version string ("version 1.2.3.4",
    "v10.0.0.1"), and for IPv6 one with a digit and two groups (so "a::b" in code is not one)."""
    try:
        text = match.decode("ascii")
        addr = ipaddress.ip_address(text)
    except (ValueError, UnicodeDecodeError):
        return False
    if _VERSION_BEFORE.search(context):
        return False
    if addr.version == 6:
        groups = [g for g in text.split(":") if g]
        return any(ch.isdigit() for ch in text) and (len(groups) >= 2 or text == "::1")
    return True


# --------------------------------------------------------------------------- date of birth

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


def _parse_date(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) of an ISO, US (M/D/Y), European (D.M.Y) or month-name date."""
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
    if m:
        return int(m[1]), int(m[2]), int(m[3])
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if m:
        return int(m[3]), int(m[1]), int(m[2])
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text)
    if m:
        return int(m[3]), int(m[2]), int(m[1])
    m = re.fullmatch(r"([A-Za-z]+)\.? (\d{1,2}),? (\d{4})", text)
    if m and m[1][:3].lower() in _MONTHS:
        return int(m[3]), _MONTHS[m[1][:3].lower()], int(m[2])
    m = re.fullmatch(r"(\d{1,2}) ([A-Za-z]+)\.? (\d{4})", text)
    if m and m[2][:3].lower() in _MONTHS:
        return int(m[3]), _MONTHS[m[2][:3].lower()], int(m[1])
    return None


def date_of_birth(match: bytes, context: bytes, params: Mapping[str, Any]) -> bool:
    """A real calendar date from 1900 up to today (a birth date is never in the future).
    The birth keyword itself is the detector's `keywords` check."""
    try:
        parsed = _parse_date(match.decode("ascii"))
        if parsed is None:
            return False
        day = datetime.date(*parsed)
    except (ValueError, UnicodeDecodeError):
        return False
    return datetime.date(1900, 1, 1) <= day <= datetime.date.today()


# --------------------------------------------------------------------------- registry

VALIDATORS: dict[str, Validator] = {
    "luhn": luhn,
    "us_ssn": us_ssn,
    "iban": iban,
    "jwt": jwt,
    "entropy": entropy,
    "aws_secret": aws_secret,
    "phone": phone,
    "url_password": url_password,
    "email": email,
    "us_itin": us_itin,
    "ip_address": ip_address,
    "date_of_birth": date_of_birth,
}

# The params each validator accepts, name -> type check + description (for pack errors).
_PARAMS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "entropy": {"min_entropy": ((int, float), "a number of bits per byte, 0-8")},
    "aws_secret": {"min_entropy": ((int, float), "a number of bits per byte, 0-8")},
    "phone": {"region": (str, "a two-letter region code such as US or GB")},
}


def check_params(name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems with a detector's `params` for validator `name`: (param, message) pairs."""
    allowed = _PARAMS.get(name, {})
    problems: list[tuple[str, str]] = []
    for key, value in params.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append((str(key), f"unknown parameter for validator {name!r} (known: {known})"))
            continue
        kind, what = allowed[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            problems.append((key, f"must be {what}"))
        elif key == "min_entropy" and not 0 <= float(value) <= 8:
            problems.append((key, f"must be {what}"))
        elif key == "region" and str(value).upper() not in phonenumbers.SUPPORTED_REGIONS:
            problems.append((key, f"unknown region {value!r}: must be {what}"))
    return problems
