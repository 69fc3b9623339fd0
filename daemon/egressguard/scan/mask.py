"""Masking, previews and fingerprints: how a finding is shown without being revealed.

* `mask_span` rewrites a matched span IN FLIGHT. It keeps the length (so an HTTP
  Content-Length or a chunk size stays right) and keeps CR/LF bytes (so a masked span never
  breaks header or line framing). It keeps only parts that identify the kind of thing, never
  enough to reuse it: a key's public prefix (AKIA, ghp_, sk-proj-), an email's domain, a
  card's last four digits, a URL's scheme, user and host.
* `preview` is the short, log-safe rendering stored in a `Detection` and in audit events.
* `fingerprint` is a keyed HMAC, so the same value can be correlated across flows and events
  without being stored, and cannot be confirmed by someone who lacks the host key.
"""

from __future__ import annotations

import hashlib
import hmac
import re

MASK = ord("*")
_KEEP_BYTES = frozenset(b"\r\n")
_MASK_TABLE = bytes(b if b in _KEEP_BYTES else MASK for b in range(256))

# Secrets: the prefix that names the kind of key (public knowledge, not secret material).
_SECRET_PREFIX: dict[str, re.Pattern[bytes]] = {
    "secret.aws_access_key_id": re.compile(rb"[A-Z]{4}"),
    "secret.github_token": re.compile(rb"gh[a-z]_|github_pat_"),
    "secret.openai_api_key": re.compile(rb"sk-(?:(?:proj|svcacct|admin)-)?"),
    "secret.anthropic_api_key": re.compile(rb"sk-ant-(?:[a-z]{2,8}[0-9]{2}-)?"),
    "secret.slack_token": re.compile(rb"xox[a-z]-"),
    "secret.google_api_key": re.compile(rb"AIza"),
    "secret.stripe_key": re.compile(rb"[a-z]{2}_(?:live|test)_"),
    "secret.jwt": re.compile(rb"eyJ"),
    "secret.private_key": re.compile(rb"-----BEGIN [A-Z ]{0,40}-----"),
    "secret.gitlab_token": re.compile(rb"gl[a-z]{1,5}-"),
    "secret.bitbucket_app_password": re.compile(rb"ATBB"),
    "secret.huggingface_token": re.compile(rb"hf_|api_org_"),
    "secret.groq_api_key": re.compile(rb"gsk_"),
    "secret.slack_webhook": re.compile(rb"hooks\.slack\.com/[a-z]+/"),
    "secret.twilio_api_key": re.compile(rb"SK"),
    "secret.sendgrid_api_key": re.compile(rb"SG\."),
}
# Secrets whose preview may show the last four characters (long random tokens only, as
# cloud consoles do); never for PEM bodies, JWTs or passwords.
_REVEAL_TAIL = frozenset({
    "secret.aws_access_key_id", "secret.github_token", "secret.openai_api_key",
    "secret.anthropic_api_key", "secret.slack_token", "secret.google_api_key",
    "secret.stripe_key", "secret.gitlab_token", "secret.bitbucket_app_password",
    "secret.huggingface_token", "secret.groq_api_key", "secret.sendgrid_api_key",
})
_URL_USERINFO = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*://[^:@]*:)([^@]*)(@.*)", re.DOTALL)
_DIGITS_ONLY = frozenset({"pii.payment_card", "pii.us_ssn", "pii.phone", "pii.us_itin"})
_CANON_ALNUM = frozenset({"pii.payment_card", "pii.us_ssn", "pii.phone", "pii.iban",
                          "pii.us_itin"})
_PREVIEW_MAX = 48
_STAR_RUN = re.compile(r"\*{13,}")


def mask_span(data: bytes, detector_id: str) -> bytes:
    """Same-length replacement for a matched span (see module docstring for what is kept)."""
    out = bytearray(data.translate(_MASK_TABLE))     # every byte but CR/LF, in C
    for i in _kept_positions(data, detector_id):
        out[i] = data[i]
    assert len(out) == len(data)
    return bytes(out)


def preview(data: bytes, detector_id: str) -> str:
    """Short, masked, printable rendering for logs and audit events (never the raw value)."""
    masked = bytearray(mask_span(data, detector_id))
    if detector_id in _REVEAL_TAIL and len(data) - _prefix_len(data, detector_id) >= 16:
        masked[-4:] = data[-4:]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in masked)
    text = _STAR_RUN.sub("*" * 12, text)
    if len(text) > _PREVIEW_MAX:
        text = text[: _PREVIEW_MAX - 3] + "..."
    return text


def fingerprint(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of `data` under the host key, hex, truncated to 16 bytes (32 hex chars)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


def canonical(detector_id: str, data: bytes) -> bytes:
    """The form that is fingerprinted: formatting removed, so "4111 1111 ..." and
    "4111-1111-..." (or an email in different case) correlate."""
    if detector_id in _CANON_ALNUM:
        return re.sub(rb"[^A-Za-z0-9+]", b"", data).upper()
    if detector_id == "pii.email":
        return data.lower()
    return data


# ------------------------------------------------------------------------------ rules

def _kept_positions(data: bytes, detector_id: str) -> set[int]:
    """Indexes of bytes that stay readable in the masked form."""
    if detector_id in _SECRET_PREFIX:
        return set(range(_prefix_len(data, detector_id)))
    if detector_id == "secret.url_password":
        return _url_kept(data)
    if detector_id == "pii.email":
        at = data.rfind(b"@")
        return set(range(at, len(data))) if at >= 0 else set()
    if detector_id in _DIGITS_ONLY:
        return _digits_kept(data, detector_id)
    if detector_id == "pii.iban":
        return {0, 1} | {i for i, b in enumerate(data) if b == 0x20}
    return set()


def _prefix_len(data: bytes, detector_id: str) -> int:
    rule = _SECRET_PREFIX.get(detector_id)
    m = rule.match(data) if rule else None
    return m.end() if m else 0


def _url_kept(data: bytes) -> set[int]:
    """Everything but the password (scheme, user and host say where, not how to log in)."""
    m = _URL_USERINFO.match(data)
    if not m:
        return set()
    return set(range(m.start(2))) | set(range(m.end(2), len(data)))


def _digits_kept(data: bytes, detector_id: str) -> set[int]:
    """Separators and '+' stay; digits are masked except a card's last four."""
    digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
    kept = {i for i, b in enumerate(data) if not 0x30 <= b <= 0x39}
    if detector_id == "pii.payment_card":
        kept.update(digits[-4:])
    return kept
