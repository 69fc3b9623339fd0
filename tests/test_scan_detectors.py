"""Every built-in detector: true positives (exact spans), false positives, validators, masking,
previews, fingerprints, and detector-pack validation errors.

Secrets are assembled at run time (tests/scan_samples.py). Assertions compare detector ids,
offsets and booleans computed beforehand, so a failure never prints a secret-shaped value.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from egressguard.errors import ConfigError
from egressguard.scan import mask, validators
from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import MAX_WIDTH, DetectorSpec, detectors_from_config, load_pack

sys.path.insert(0, str(Path(__file__).parent))   # scan_samples, whatever pytest's import mode

from scan_samples import (  # noqa: E402
    ALNUM, B64, URLSAFE, Sample, false_positives, make_jwt, pem, rand,
    true_positives,
)

REQUIRED_IDS = {
    "secret.aws_access_key_id", "secret.aws_secret_access_key", "secret.github_token",
    "secret.openai_api_key", "secret.anthropic_api_key", "secret.slack_token",
    "secret.google_api_key", "secret.stripe_key", "secret.jwt", "secret.private_key",
    "secret.url_password", "pii.email", "pii.payment_card", "pii.us_ssn", "pii.phone",
    "pii.iban",
    "secret.gcp_service_account", "secret.azure_storage_key", "secret.gitlab_token",
    "secret.bitbucket_app_password", "secret.huggingface_token", "secret.groq_api_key",
    "secret.cohere_api_key", "secret.mistral_api_key", "secret.slack_webhook",
    "secret.twilio_api_key", "secret.sendgrid_api_key", "pii.us_itin", "pii.ipv4_address",
    "pii.ipv6_address", "pii.date_of_birth",
}
KEY = b"test-fingerprint-key"
TPS = true_positives()
FPS = false_positives()


@pytest.fixture(scope="module")
def engine() -> ScanEngine:
    return ScanEngine(load_pack(), KEY)


def spans(engine: ScanEngine, data: bytes) -> list[tuple[str, int, int]]:
    return [(d.detector, d.start, d.end) for d in engine.scan(data)]


# ------------------------------------------------------------------------------ the pack

def test_builtin_pack_has_exactly_the_required_detectors() -> None:
    specs = load_pack()
    assert {s.id for s in specs} == REQUIRED_IDS
    assert {s.cls for s in specs} == {"secret", "pii"}
    assert all(s.cls == s.id.split(".")[0] for s in specs)


def test_every_detector_has_true_and_false_positive_samples() -> None:
    covered = {s.detector for s in TPS}
    assert covered == REQUIRED_IDS
    fp_names = {name.split("-")[0] for name, _ in FPS}
    for family in ("aws", "github", "openai", "anthropic", "slack", "google", "stripe", "jwt",
                   "pem", "url", "email", "card", "ssn", "phone", "iban", "gcp", "azure",
                   "gitlab", "bitbucket", "huggingface", "groq", "cohere", "mistral",
                   "twilio", "sendgrid", "itin", "ipv4", "ipv6", "dob"):
        assert family in fp_names


def test_builtin_widths_are_bounded(engine: ScanEngine) -> None:
    assert all(1 <= s.width <= MAX_WIDTH for s in load_pack())
    assert engine.hold_back == 4088       # secret.jwt: 4088 wide, end boundary folded (+1 - 1)
    assert engine.detector_ids == frozenset(REQUIRED_IDS)


# ------------------------------------------------------------------------------ detection

@pytest.mark.parametrize("s", TPS, ids=[s.name for s in TPS])
def test_true_positive_exact_span(engine: ScanEngine, s: Sample) -> None:
    got = spans(engine, s.text)
    assert got == [(s.detector, s.start, s.end)]


@pytest.mark.parametrize("item", FPS, ids=[name for name, _ in FPS])
def test_false_positive_finds_nothing(engine: ScanEngine, item: tuple[str, bytes]) -> None:
    got = spans(engine, item[1])
    assert got == []


def test_openai_and_anthropic_are_disjoint(engine: ScanEngine) -> None:
    r = random.Random(5)
    for _ in range(200):
        kind = r.choice(["api03-", "admin01-", ""])
        ant = ("sk-" + "ant-" + kind + rand(r, URLSAFE, r.randint(32, 190))).encode()
        got = {d for d, _, _ in spans(engine, b" " + ant + b" ")}
        assert got == {"secret.anthropic_api_key"}
        oai = ("sk-" + rand(r, ALNUM, r.randint(32, 64))).encode()
        got = {d for d, _, _ in spans(engine, b" " + oai + b" ")}
        assert got == {"secret.openai_api_key"}


def test_token_embedded_in_longer_token_is_not_reported(engine: ScanEngine) -> None:
    r = random.Random(6)
    token = "gh" + "p_" + rand(r, ALNUM, 36)
    assert spans(engine, ("x" + token).encode()) == []          # no left boundary
    assert spans(engine, (token + "_x").encode()) == []         # no right boundary
    assert len(spans(engine, (" " + token + " ").encode())) == 1


def test_private_key_longer_than_the_cap_is_reported_up_to_the_cap(engine: ScanEngine) -> None:
    text, _ = pem(random.Random(7), "RSA", 80)                    # ~5.2 KB of body
    header = len("-----BEGIN RSA PRIVATE KEY-----")
    got = spans(engine, text.encode())
    assert got == [("secret.private_key", 0, header + 4040)]      # the body repeat's cap


def test_jwt_spans_all_three_parts(engine: ScanEngine) -> None:
    token = make_jwt(random.Random(8)).encode()
    got = spans(engine, b"Bearer " + token + b"\r\n")
    assert got == [("secret.jwt", 7, 7 + len(token))]


def test_email_inside_url_credentials_is_reported_as_url_password_only(engine: ScanEngine) -> None:
    got = spans(engine, b"redis://cache:" + b"Zq8" + b"xPw2@cache.example.net/0")
    assert [d for d, _, _ in got] == ["secret.url_password"]


def test_phone_keeps_the_longest_number(engine: ScanEngine) -> None:
    got = spans(engine, b"+49 30 901820 and more")
    assert got == [("pii.phone", 0, 13)]


def test_phone_region_is_configurable() -> None:
    national_gb = b"call 020 7946 0958 now"
    us = ScanEngine(load_pack(), KEY)
    us_hits = [d for d, _, _ in spans(us, b"call (415) 555-2671 now")]
    assert us_hits == ["pii.phone"]
    # The national pattern is US-shaped; a GB default region makes US national numbers invalid.
    gb = ScanEngine(load_pack(), KEY, phone_region="GB")
    gb_hits = [d for d, _, _ in spans(gb, b"call (415) 555-2671 now")]
    assert gb_hits == []
    assert spans(us, national_gb) == []
    # International numbers do not depend on the region.
    assert [d for d, _, _ in spans(gb, b"+1 415 555 2671")] == ["pii.phone"]


def test_card_followed_by_more_digit_groups(engine: ScanEngine) -> None:
    got = spans(engine, b"pan 4111 1111 1111 1111 12/27")
    assert got == [("pii.payment_card", 4, 23)]


# ------------------------------------------------------------------------------ no raw values

def sensitive_part(s: Sample) -> str:
    """The part of a sample that must never be shown (a domain or a URL host may be)."""
    value = s.value.decode()
    if s.detector == "secret.url_password":
        return value.split("://", 1)[1].split(":", 1)[1].split("@", 1)[0]
    if s.detector == "pii.email":
        return value.split("@", 1)[0]
    return value[-12:]


@pytest.mark.parametrize("s", TPS, ids=[s.name for s in TPS])
def test_detection_holds_no_raw_value(engine: ScanEngine, s: Sample) -> None:
    (d,) = engine.scan(s.text)
    rendered = repr(d) + json.dumps(d.to_dict())
    leaked = sensitive_part(s) in rendered
    assert not leaked
    assert len(d.preview) <= 48
    assert len(d.fingerprint) == 32 and int(d.fingerprint, 16) >= 0


# ------------------------------------------------------------------------------ masking

@pytest.mark.parametrize("s", TPS, ids=[s.name for s in TPS])
def test_mask_keeps_length_and_line_breaks(s: Sample) -> None:
    masked = mask.mask_span(s.value, s.detector)
    assert len(masked) == len(s.value)
    crlf_kept = all(m == v for m, v in zip(masked, s.value) if v in b"\r\n")
    assert crlf_kept
    changed = sum(m != v for m, v in zip(masked, s.value))
    assert changed >= min(4, len(sensitive_part(s)))


PREFIXES = {
    "aws-id": b"AK" + b"IA", "github-ghp": b"gh" + b"p_", "github-pat": b"github" + b"_pat_",
    "openai-proj": b"sk-" + b"proj-", "openai-legacy": b"sk-", "anthropic": b"sk-" + b"ant-api03-",
    "slack-bot": b"xo" + b"xb-", "google": b"AI" + b"za", "stripe-live": b"sk" + b"_live_",
    "jwt": b"eyJ",
}


@pytest.mark.parametrize("name", sorted(PREFIXES))
def test_mask_keeps_only_the_public_prefix_of_keys(name: str) -> None:
    s = next(x for x in TPS if x.name == name)
    masked = mask.mask_span(s.value, s.detector)
    prefix = PREFIXES[name]
    assert masked.startswith(prefix)
    assert set(masked[len(prefix):]) == {ord("*")}


def test_mask_rules_for_pii_and_urls() -> None:
    assert mask.mask_span(b"jane.doe@example.com", "pii.email") == b"********@example.com"
    assert mask.mask_span(b"4111 1111 1111 1111", "pii.payment_card") == b"**** **** **** 1111"
    assert mask.mask_span(b"123-45-6780", "pii.us_ssn") == b"***-**-****"
    assert mask.mask_span(b"+1 415 555 2671", "pii.phone") == b"+* *** *** ****"
    assert mask.mask_span(b"DE89 3704", "pii.iban") == b"DE** ****"
    url = b"postgres://app:" + b"hunter2x" + b"@db.example"
    assert mask.mask_span(url, "secret.url_password") == b"postgres://app:********@db.example"
    assert mask.mask_span(b"ab\r\ncd", "custom.thing") == b"**\r\n**"


def test_preview_is_short_masked_and_shows_at_most_four_trailing_chars() -> None:
    s = next(x for x in TPS if x.name == "aws-id")
    p = mask.preview(s.value, s.detector)
    assert p.startswith("AKIA") and p.count("*") == 12 and len(p) == 20
    hidden = s.value[4:16].decode() in p
    assert not hidden
    pem_sample = next(x for x in TPS if x.name == "pem-rsa")
    pp = mask.preview(pem_sample.value, pem_sample.detector)
    assert pp.startswith("-----BEGIN RSA PRIVATE KEY-----") and len(pp) <= 48


def test_fingerprint_is_keyed_and_normalised(engine: ScanEngine) -> None:
    a = mask.fingerprint(b"k1", b"value")
    assert a == mask.fingerprint(b"k1", b"value") != mask.fingerprint(b"k2", b"value")
    assert len(a) == 32
    (spaced,) = engine.scan(b"card 4111 1111 1111 1111 ")
    (plain,) = engine.scan(b"card 4111111111111111 ")
    assert spaced.fingerprint == plain.fingerprint
    (upper,) = engine.scan(b"Jane@Example.com ")
    (lower,) = engine.scan(b"jane@example.com ")
    assert upper.fingerprint == lower.fingerprint


# ------------------------------------------------------------------------------ validators

@pytest.mark.parametrize("digits,ok", [
    ("4111111111111111", True), ("4111111111111112", False), ("5555555555554444", True),
    ("378282246310005", True), ("6011111111111117", True), ("3530111333300000", True),
    ("0000000000000000", False), ("1234567812345670", False), ("411111111111", False),
])
def test_luhn_validator(digits: str, ok: bool) -> None:
    assert validators.luhn(digits.encode(), b"", {}) is ok


@pytest.mark.parametrize("ssn,ok", [
    ("123-45-6780", True), ("001-01-0001", True), ("899-99-9999", True),
    ("000-12-3456", False), ("666-12-3456", False), ("900-12-3456", False),
    ("950-12-3456", False), ("999-99-9999", False), ("123-00-4567", False),
    ("123-45-0000", False), ("078-05-1120", False), ("219-09-9999", False),
    ("123-45-6789", False), ("123-45-6788", True),
])
def test_us_ssn_validator(ssn: str, ok: bool) -> None:
    assert validators.us_ssn(ssn.encode(), b"", {}) is ok


@pytest.mark.parametrize("iban,ok", [
    ("DE89370400440532013000", True), ("GB82 WEST 1234 5698 7654 32", True),
    ("NL91ABNA0417164300", True), ("DE89370400440532013001", False),
    ("DE8937040044053201300", False), ("XX89370400440532013000", False),
])
def test_iban_validator(iban: str, ok: bool) -> None:
    assert validators.iban(iban.encode(), b"", {}) is ok


def test_jwt_validator() -> None:
    r = random.Random(3)
    assert validators.jwt(make_jwt(r).encode(), b"", {})
    assert not validators.jwt(make_jwt(r, header={"typ": "JWT"}).encode(), b"", {})
    assert not validators.jwt(b"eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig", b"", {})
    assert not validators.jwt(b"eyJ!!!.eyJ.x", b"", {})


def test_entropy_validator() -> None:
    r = random.Random(4)
    assert validators.shannon_entropy(b"") == 0.0
    assert validators.shannon_entropy(b"aaaa") == 0.0
    assert validators.entropy(rand(r, ALNUM, 48).encode(), b"", {"min_entropy": 4.0})
    assert not validators.entropy(b"a" * 48, b"", {"min_entropy": 1.0})


def test_aws_secret_validator_needs_keyword_mix_and_entropy() -> None:
    r = random.Random(9)
    key = ("a1Z" + rand(r, B64, 37)).encode()
    assert validators.aws_secret(key, b"aws_secret_access_key = ", {})
    assert not validators.aws_secret(key, b"value = ", {})
    assert not validators.aws_secret(b"0123456789abcdef" * 2 + b"01234567", b"secret ", {})


def test_phone_validator_uses_region() -> None:
    assert validators.phone(b"(415) 555-2671", b"", {"region": "US"})
    assert not validators.phone(b"(415) 555-2671", b"", {"region": "GB"})
    assert validators.phone(b"+44 20 7946 0958", b"", {"region": "US"})
    assert not validators.phone(b"+1 123 456 7890", b"", {})


def test_url_password_validator() -> None:
    assert validators.url_password(b"https://u:s3cr3tZ@h", b"", {})
    for pw in (b"password", b"${PW}", b"{{pw}}", b"****", b""):
        assert not validators.url_password(b"https://u:" + pw + b"@h", b"", {})


def test_validators_never_raise_on_junk() -> None:
    r = random.Random(10)
    for _ in range(300):
        junk = bytes(r.randrange(256) for _ in range(r.randint(0, 60)))
        for fn in validators.VALIDATORS.values():
            fn(junk, junk, {})


# ------------------------------------------------------------------------------ pack errors

def write(tmp_path, text: str):
    path = tmp_path / "pack.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def issues_of(excinfo) -> list[tuple[int | None, str, str]]:
    return [(i.line, i.field, i.message) for i in excinfo.value.issues]


def test_invalid_regex_names_file_line_field_detector_and_error(tmp_path) -> None:
    path = write(tmp_path, """\
        version: 1
        detectors:
          - id: custom.ok
            class: secret
            pattern: 'tok_[a-z]{10}'
          - id: custom.broken
            class: secret
            pattern: 'tok_([a-z]{10}'
        """)
    with pytest.raises(ConfigError) as excinfo:
        load_pack(path)
    (issue,) = excinfo.value.issues
    assert issue.file == str(path) and issue.line == 8
    assert issue.field == "detectors[1].pattern"
    assert "custom.broken" in issue.message and "missing )" in issue.message
    assert str(issue).startswith(f"{path}:8: detectors[1].pattern: ")


def test_hyperscan_rejection_names_the_detector(tmp_path) -> None:
    path = write(tmp_path, """\
        detectors:
          - {id: custom.atomic, class: pii, pattern: '(?>ab)c'}
        """)
    with pytest.raises(ConfigError) as excinfo:
        load_pack(path)
    (line, field, message), = issues_of(excinfo)
    assert (line, field) == (2, "detectors[0].pattern")
    assert "custom.atomic" in message and "Hyperscan rejects it" in message and "Atomic" in message


def test_many_problems_are_reported_together(tmp_path) -> None:
    path = write(tmp_path, """\
        detectors:
          - id: custom.unbounded
            class: secret
            pattern: 'tok_[a-z]+'
          - id: Bad Id
            class: secrets
            pattern: 'x{3}'
          - id: custom.anchor
            class: pii
            pattern: '^abc\\b'
            severity: urgent
          - id: custom.validator
            class: pii
            pattern: 'abc'
            validator: nope
            colour: red
          - id: custom.params
            class: pii
            pattern: 'abcd'
            validator: entropy
            params: {min_entropy: 99, other: 1}
          - id: custom.unbounded
            class: secret
            pattern: 'x[a-z]{3}'
          - id: custom.bounds
            class: secret
            pattern: 'x[a-z]{3}'
            not_before: '[^a]'
            not_after: 'a{20}'
            max_width: 0
          - id: custom.posix
            class: secret
            pattern: '[[:alpha:]]x'
        """)
    with pytest.raises(ConfigError) as excinfo:
        load_pack(path)
    found = {(line, field) for line, field, _ in issues_of(excinfo)}
    assert (4, "detectors[0].max_width") in found            # unbounded: points at the pattern line
    assert (5, "detectors[1].id") in found
    assert (6, "detectors[1].class") in found
    assert (10, "detectors[2].pattern") in found
    assert (11, "detectors[2].severity") in found
    assert (15, "detectors[3].validator") in found
    assert (16, "detectors[3].colour") in found
    assert (21, "detectors[4].params.min_entropy") in found
    assert (21, "detectors[4].params.other") in found
    assert (22, "detectors[5].id") in found                  # duplicate id
    assert (28, "detectors[6].not_before") in found
    assert (29, "detectors[6].not_after") in found
    assert (30, "detectors[6].max_width") in found
    assert (33, "detectors[7].pattern") in found
    text = str(excinfo.value)
    assert text.count("\n") == len(excinfo.value.issues) - 1
    assert "Traceback" not in text


def test_unbounded_pattern_with_max_width_is_accepted_and_capped(tmp_path) -> None:
    path = write(tmp_path, """\
        detectors:
          - id: custom.token
            class: secret
            pattern: 'tok_[a-z0-9]{8,}'
            not_before: '[a-z0-9_]'
            not_after: '[a-z0-9]'
            max_width: 64
            flags: [caseless]
            severity: low
        """)
    (spec,) = load_pack(path)
    assert spec.width == 64 and spec.caseless and spec.severity == "low"
    eng = ScanEngine([spec], KEY)
    assert eng.hold_back == 64
    got = spans(eng, b"a TOK_abcdefgh12 b")
    assert got == [("custom.token", 2, 16)]


def test_yaml_syntax_error_has_a_line(tmp_path) -> None:
    path = write(tmp_path, "detectors:\n  - id: [unclosed\n")
    with pytest.raises(ConfigError) as excinfo:
        load_pack(path)
    assert excinfo.value.issues[0].line is not None


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_pack(tmp_path / "nope.yaml")


def test_detectors_from_policy_yaml_node_and_plain_data() -> None:
    doc = textwrap.dedent("""\
        rules: []
        detectors:
          - id: custom.employee_id
            class: pii
            pattern: 'EMP-[0-9]{6}'
            severity: medium
          - id: custom.bad
            pattern: 'x'
        """)
    root = yaml.compose(doc)
    node = next(v for k, v in root.value if k.value == "detectors")
    with pytest.raises(ConfigError) as excinfo:
        detectors_from_config(node, "policy.yaml")
    (line, field, message), = issues_of(excinfo)
    assert (line, field) == (7, "detectors[1].class") and "missing" in message
    specs = detectors_from_config([{"id": "custom.employee_id", "class": "pii",
                                    "pattern": "EMP-[0-9]{6}"}], "policy.yaml")
    assert specs == [DetectorSpec(id="custom.employee_id", cls="pii", pattern="EMP-[0-9]{6}")]
    with pytest.raises(ConfigError) as excinfo:
        detectors_from_config([{"id": "custom.x", "class": "pii", "pattern": "a("}], "p.yaml")
    assert excinfo.value.issues[0].line is None
    assert "custom.x" in excinfo.value.issues[0].message


def test_custom_detectors_combine_with_builtin() -> None:
    custom = detectors_from_config([{"id": "custom.employee_id", "class": "pii",
                                     "pattern": "EMP-[0-9]{6}"}], "policy.yaml")
    eng = ScanEngine(load_pack() + custom, KEY)
    got = spans(eng, b"who: EMP-123456, mail a@example.com")
    assert got == [("custom.employee_id", 5, 15), ("pii.email", 22, 35)]
    with pytest.raises(ValueError):
        ScanEngine(load_pack() + load_pack()[:1], KEY)
