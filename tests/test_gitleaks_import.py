"""Importing gitleaks configurations: every feature on our own test config, and gitleaks' real
default config (fetched at install time by scripts/fetch-gitleaks-config.sh, never copied in).

Values are generated at run time; assertions compare ids and offsets, never print values.
"""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressguard.errors import ConfigError
from egressguard.scan import re2
from egressguard.scan.engine import ScanEngine
from egressguard.scan.gitleaks import load_gitleaks

sys.path.insert(0, str(Path(__file__).parent))

from scan_samples import streamed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "gitleaks"
RULES = DATA / "rules.toml"
DEFAULT = ROOT / ".venv" / "share" / "egressguard" / "gitleaks-default.toml"
KEY = b"gitleaks-test-key"
LOWER_ALNUM = string.ascii_lowercase + string.digits


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.fixture(scope="module")
def pack():
    return load_gitleaks(RULES)


@pytest.fixture(scope="module")
def engine(pack) -> ScanEngine:
    return ScanEngine(list(pack.specs), KEY)


def found(engine: ScanEngine, text: str) -> list[tuple[str, int, int]]:
    return [(d.detector, d.start, d.end) for d in engine.scan(text.encode())]


# ------------------------------------------------------------------------------ our test config

def test_every_rule_is_imported_or_reported(pack) -> None:
    imported = {s.report_id for s in pack.specs}
    assert imported == {f"secret.gitleaks.{i}" for i in (
        "acme-token", "widget-key", "named-group", "quoted", "posix", "midflag", "alternation",
        "generic-thing", "base-kept")}
    reasons = {s.rule_id: s.reason for s in pack.skipped}
    assert set(reasons) == {"unicode", "mid-boundary", "path-only"}
    assert "Unicode" in reasons["unicode"]
    assert "middle of the pattern" in reasons["mid-boundary"]
    assert "file name" in reasons["path-only"]
    assert all(s.line for s in pack.skipped)
    assert pack.rule_count == len(imported) + len(pack.skipped)     # base-disabled is gone


def test_prefix_token_with_boundaries_group_and_terminator(engine) -> None:
    rng = random.Random(1)
    token = "acme_" + rand(rng, LOWER_ALNUM, 32)
    text = f'export T="{token}"\n'
    start = text.index(token)
    assert found(engine, text) == [("secret.gitleaks.acme-token", start, start + len(token))]
    assert found(engine, text.upper()) == [("secret.gitleaks.acme-token", start,
                                             start + len(token))]           # (?i)
    assert found(engine, f"x{token} ") == []                               # \b before
    assert found(engine, f"{token}x ") == []                               # terminator after
    assert found(engine, f"{token}") == [("secret.gitleaks.acme-token", 0, len(token))]  # $
    # The terminator's two-byte \\n (a JSON-escaped newline) is allowed, \\x is not.
    assert found(engine, token + "\\n") == [("secret.gitleaks.acme-token", 0, len(token))]
    assert found(engine, token + "\\x") == []


def test_entropy_keywords_and_allowlists_suppress(engine) -> None:
    rng = random.Random(2)
    assert found(engine, "t=acme_" + "a" * 32 + " ") == []                  # entropy 0 < 3
    assert found(engine, "t=acme_0000" + rand(rng, LOWER_ALNUM, 28) + " ") == []  # targetRules
    assert found(engine, "t=acme_acmestop" + rand(rng, LOWER_ALNUM, 24) + " ") == []  # base stopword
    assert found(engine, "t=acme_dummyvalue" + rand(rng, LOWER_ALNUM, 22) + " ") == []  # global
    assert found(engine, "widget = placeholder" + rand(rng, LOWER_ALNUM, 13) + "\n") == []


def test_keyword_assignment_rule_reports_the_secret_group(engine) -> None:
    rng = random.Random(3)
    secret = rand(rng, LOWER_ALNUM, 24)
    text = f"config.widget_key = '{secret}'\n"
    start = text.index(secret)
    got = engine.scan(text.encode())
    assert [(d.detector, d.start, d.end) for d in got] == [
        ("secret.gitleaks.widget-key", start, start + 24)]
    assert got[0].confidence == "high"                 # medium + the keyword
    assert found(engine, f"# example: widget_key = '{secret}'\n") == []     # line allowlist
    assert found(engine, f"widget_demo = '{secret}'\n") == []              # match allowlist
    assert found(engine, f"gadget_key = '{secret}'\n") == []               # no keyword


def test_named_group_end_of_text_quoted_posix_and_legacy_allowlist(engine) -> None:
    rng = random.Random(4)
    hexes = rand(rng, "0123456789ABCDEF", 16)
    assert found(engine, f"id tok-{hexes}") == [("secret.gitleaks.named-group", 7, 23)]
    assert found(engine, f"id tok-{hexes} and more") == []                 # \z: end of text
    quoted = "key+v1:" + rand(rng, string.ascii_lowercase, 12)
    assert found(engine, f" {quoted} ") == [("secret.gitleaks.quoted", 1, 1 + len(quoted))]
    pk = "pk-" + rand(rng, string.ascii_letters + string.digits, 20)
    assert found(engine, f" {pk} ") == [("secret.gitleaks.posix", 1, 1 + len(pk))]
    assert found(engine, " pk-aaaaa" + rand(rng, LOWER_ALNUM, 15) + " ") == []


def test_scoped_flags_and_alternation(engine) -> None:
    rng = random.Random(5)
    mixed = "mid-" + rand(rng, string.ascii_letters, 10)
    assert found(engine, f" {mixed} ") == [("secret.gitleaks.midflag", 1, 15)]
    assert found(engine, " MID-" + rand(rng, string.ascii_lowercase, 10) + " ") == []
    a1 = "alt1_" + rand(rng, string.digits, 10)
    a2 = "alt2_" + rand(rng, string.ascii_lowercase, 10)
    text = f"{a1} {a2}"
    assert found(engine, text) == [("secret.gitleaks.alternation", 0, 15),
                                   ("secret.gitleaks.alternation", 16, 31)]
    assert "secret.gitleaks.alternation" in engine.detector_ids


def test_generic_rules_need_a_digit_and_base_rules_are_kept(engine) -> None:
    rng = random.Random(6)
    assert found(engine, "generic_secret = " + rand(rng, string.ascii_lowercase, 16) + " ") == []
    value = rand(rng, string.ascii_lowercase, 15) + "7"
    assert found(engine, f"generic_secret = {value} ") == [("secret.gitleaks.generic-thing", 17, 33)]
    base = "base_" + rand(rng, "0123456789abcdef", 20)
    assert found(engine, f" {base} ") == [("secret.gitleaks.base-kept", 1, 26)]
    assert found(engine, " gone_" + rand(rng, string.digits, 10) + " ") == []


def test_prefix_is_configurable() -> None:
    pack = load_gitleaks(RULES, "secret.acme")
    assert "secret.acme.acme-token" in {s.report_id for s in pack.specs}


def test_use_default_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text('[extend]\nuseDefault = true\n')
    with pytest.raises(ConfigError) as exc:
        load_gitleaks(f)
    assert exc.value.issues[0].field == "extend.useDefault"
    assert exc.value.issues[0].line == 2
    g = tmp_path / "bad.toml"
    g.write_text('[[rules]]\nid = "x"\nregex = \n')
    with pytest.raises(ConfigError) as exc:
        load_gitleaks(g)
    assert "invalid TOML" in exc.value.issues[0].message
    assert exc.value.issues[0].line == 3


@pytest.mark.parametrize("go, python", [
    (r"(?i)ab", "(?i:ab)"),
    (r"a(?i)b|c", "a(?i:b)|(?i:c)"),
    (r"x\z", r"x\Z"),
    (r"(?P<n>a)", "(a)"),
    (r"\Qa.b\E", r"(?:a\x2eb)"),
    (r"[[:digit:]x]", "[0-9x]"),
    (r"\s", r"[\x09\x0a\x0c\x0d\x20]"),
    (r"\x{41}", "A"),
])
def test_re2_translation(go: str, python: str) -> None:
    assert re2.translate(go) == python


@pytest.mark.parametrize("go", [r"\p{L}", r"(?U)a+", r"[é]", r"\1", r"(?=a)", r"\x{100}"])
def test_re2_untranslatable(go: str) -> None:
    with pytest.raises(re2.Untranslatable):
        re2.translate(go)


def test_check_prints_each_skipped_rule(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"scope: {{cgroup: /ai-agents}}\ndetectors:\n  packs: [{RULES}]\n"
                      "rules:\n  - name: r\n    detected: ['secret.gitleaks.*']\n"
                      "    action: block\n")
    r = subprocess.run([sys.executable, "-m", "egressguard", "check", "--config", str(policy)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    for rule_id in ("unicode", "mid-boundary", "path-only"):
        assert any(f"rules[id={rule_id}]: not imported:" in w for w in warnings)


# ------------------------------------------------------------------------------ gitleaks' own

@pytest.fixture(scope="module")
def default_pack():
    assert DEFAULT.is_file(), ("gitleaks' default config is missing: run "
                               "scripts/fetch-gitleaks-config.sh (make install does)")
    return load_gitleaks(DEFAULT)


def test_default_config_every_rule_compiles_or_is_reported(default_pack) -> None:
    data = tomllib.loads(DEFAULT.read_text())
    ids = {r["id"] for r in data["rules"]}
    assert len(ids) >= 200 and data.get("title") == "gitleaks config"
    imported = {s.report_id.removeprefix("secret.gitleaks.") for s in default_pack.specs}
    skipped = {s.rule_id for s in default_pack.skipped}
    assert imported | skipped == ids and not imported & skipped
    assert all(s.reason for s in default_pack.skipped)
    assert len(imported) >= 0.95 * len(ids)
    engine = ScanEngine(list(default_pack.specs), KEY)       # all in ONE database
    # the README's number: the 4,096-byte cap - 1, + 1 for an end boundary Hyperscan matches
    assert engine.hold_back == 4096


def _default_samples(seed: int) -> list[tuple[str, str]]:
    """(rule id, text) for a few well-known gitleaks rules, values generated here."""
    r = random.Random(seed)
    b32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    alnum = string.ascii_letters + string.digits
    return [
        ("aws-access-token", "AK" + "IA" + rand(r, b32, 16)),
        ("github-pat", "gh" + "p_" + rand(r, alnum, 36)),
        ("gitlab-pat", "gl" + "pat-" + rand(r, alnum, 20)),
        ("slack-bot-token", "xo" + "xb-" + rand(r, string.digits, 11) + "-" + rand(r, string.digits, 12) + "-" + rand(r, alnum, 24)),
        ("npm-access-token", "np" + "m_" + rand(r, string.ascii_lowercase + string.digits, 36)),
        ("shopify-access-token", "sh" + "pat_" + rand(r, "0123456789abcdef", 32)),
        ("stripe-access-token", "sk" + "_live_" + rand(r, alnum, 24)),
        ("huggingface-access-token", "hf" + "_" + rand(r, string.ascii_letters, 34)),
        ("age-secret-key", "AGE-" + "SECRET-KEY-1" + rand(r, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
    ]


def test_default_config_finds_well_known_tokens(default_pack) -> None:
    engine = ScanEngine(list(default_pack.specs), KEY)
    for rule_id, value in _default_samples(7):
        text = f'token = "{value}"\n'
        got = {(d.detector, d.start, d.end) for d in engine.scan(text.encode())}
        start = text.index(value)
        assert (f"secret.gitleaks.{rule_id}", start, start + len(value)) in got, rule_id


@pytest.fixture(scope="module")
def default_engine(default_pack) -> ScanEngine:
    return ScanEngine(list(default_pack.specs), KEY)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 3), cuts=st.lists(st.integers(0, 2000), max_size=30))
def test_default_pack_streams_like_one_shot(default_engine, seed: int, cuts: list[int]) -> None:
    """Hypothesis: any split points give the one-shot findings with gitleaks' rules too."""
    r = random.Random(seed)
    parts = []
    for rule_id, value in _default_samples(seed):
        parts.append(r.choice(['key = "', "token: ", " ", "\n", "api_key="]) + value
                     + r.choice(['"\n', " ", ";", "\n"]))
    data = "".join(parts).encode()
    cuts = [c % (len(data) + 1) for c in cuts]
    expected = sorted((d.detector, d.start, d.end) for d in default_engine.scan(data))
    assert expected
    assert streamed(default_engine, data, cuts) == expected


def test_no_secret_in_pattern_text_shows_in_errors(pack) -> None:
    """Skip reasons describe constructs; they never quote matched data (there is none)."""
    for s in pack.skipped:
        assert not re.search(r"[A-Za-z0-9]{30,}", s.reason)
