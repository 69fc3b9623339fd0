"""Policies on `min_confidence` and `severity`, the detector config keys of issue 7, and
confidence as the real engine computes it (validator and keyword raise it)."""

from __future__ import annotations

import random
import string
import textwrap
from pathlib import Path

import pytest

from egressguard.config import config_from_text
from egressguard.daemon import compile_config
from egressguard.errors import ConfigError
from egressguard.model import Action, Destination, Detection, Process
from egressguard.policy.evaluate import Policy
from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import detectors_from_config, load_pack

AGENT = Process(pid=100, uid=1000, comm="python3", exe="/usr/bin/python3")
DEST = Destination("127.10.0.1", 443, "api.example.com")


def det(detector: str, severity: str, confidence: str) -> Detection:
    return Detection(detector, detector.split(".")[0], 0, 10, "****", "fp", severity, confidence)


def policy(rules: str) -> Policy:
    text = "scope: {cgroup: /a}\napprovals: {approvers: [0]}\nrules:\n" + textwrap.indent(
        textwrap.dedent(rules), "  ")
    return Policy.from_config(config_from_text(text, resolve_user=lambda n: 0))


def test_min_confidence_and_severity_filter_findings() -> None:
    p = policy("""
        - name: sure-secrets
          detected: [secret]
          min_confidence: high
          severity: [high, critical]
          action: block
        - name: other-secrets
          detected: [secret]
          action: hold
        - name: low-pii
          detected: [pii]
          severity: low
          action: allow
        - name: pii
          detected: [pii]
          action: mask
    """)
    cd = p.decide_connect(AGENT, DEST)
    decide = lambda d: p.decide_content(cd, [d]).verdict   # noqa: E731
    assert decide(det("secret.aws_access_key_id", "critical", "high")).rule == "sure-secrets"
    assert decide(det("secret.gitleaks.x", "high", "medium")).rule == "other-secrets"
    assert decide(det("secret.x", "medium", "high")).rule == "other-secrets"
    assert decide(det("pii.ipv4_address", "low", "low")).action is Action.ALLOW
    assert decide(det("pii.email", "medium", "medium")).action is Action.MASK


@pytest.mark.parametrize("rule, field, message", [
    ("{name: r, detected: [secret], min_confidence: sure, action: block}",
     "rules[0].min_confidence", "is not one of: low, medium, high"),
    ("{name: r, detected: [secret], severity: [urgent], action: block}",
     "rules[0].severity[0]", "is not one of"),
    ("{name: r, min_confidence: high, action: block}", "rules[0].detected",
     "min_confidence and severity filter findings"),
])
def test_bad_filters_name_the_field(rule: str, field: str, message: str) -> None:
    text = f"scope: {{cgroup: /a}}\nrules:\n  - {rule}\n"
    with pytest.raises(ConfigError) as exc:
        config_from_text(text, resolve_user=lambda n: 0)
    issue = next(i for i in exc.value.issues if i.field == field)
    assert message in issue.message and issue.line == 3


def test_detector_config_keys_are_checked(tmp_path: Path) -> None:
    pack = tmp_path / "p.toml"
    pack.write_text("")
    text = (f"scope: {{cgroup: /a}}\ndetectors:\n  phone_region: XX\n"
            f"  packs: [{{path: {pack}, prefix: 'Not An Id'}}, {{prefix: secret.x}}]\n")
    with pytest.raises(ConfigError) as exc:
        config_from_text(text, resolve_user=lambda n: 0)
    fields = {i.field: i.line for i in exc.value.issues}
    assert fields == {"detectors.phone_region": 3, "detectors.packs[0].prefix": 4,
                      "detectors.packs[1].path": 4}


def test_pack_prefix_and_phone_region_reach_the_engine(tmp_path: Path) -> None:
    rules = Path(__file__).parent / "data" / "gitleaks" / "rules.toml"
    text = (f"scope: {{cgroup: /a}}\ndetectors:\n  phone_region: gb\n"
            f"  packs: [{{path: {rules}, prefix: secret.acme}}]\n")
    cfg = config_from_text(text, resolve_user=lambda n: 0)
    assert cfg.detectors.phone_region == "GB"
    engine = compile_config(cfg, bytes(32)).engine
    assert "secret.acme.acme-token" in engine.detector_ids
    found = engine.scan(b"call 020 7946 0958 today")
    assert [d.detector for d in found] == ["pii.phone"]


def test_confidence_is_raised_by_validator_and_keyword() -> None:
    engine = ScanEngine(load_pack(), b"k" * 16)
    rng = random.Random(3)
    digits = "4111111111111111"
    plain = engine.scan(f"ref {digits} end".encode())
    near = engine.scan(f"credit card {digits} end".encode())
    assert [(d.detector, d.confidence) for d in plain] == [("pii.payment_card", "medium")]
    assert [(d.detector, d.confidence) for d in near] == [("pii.payment_card", "high")]
    aws = "AK" + "IA" + "".join(rng.choice(string.ascii_uppercase) for _ in range(16))
    assert [d.confidence for d in engine.scan(f" {aws} ".encode())] == ["high"]


def test_custom_detector_keywords_entropy_confidence() -> None:
    (spec,) = detectors_from_config([{
        "id": "custom.ticket", "class": "secret", "pattern": "[A-Za-z0-9]{20}",
        "keywords": ["ticket"], "entropy": 3.5, "confidence": "low",
        "not_before": "[A-Za-z0-9]", "not_after": "[A-Za-z0-9]"}], "<t>")
    engine = ScanEngine([spec], b"k")
    rng = random.Random(4)
    value = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(20))
    assert [d.confidence for d in engine.scan(f"ticket: {value}".encode())] == ["medium"]
    assert engine.scan(f"nothing: {value}".encode()) == []            # keyword required
    assert engine.scan(b"ticket: aaaaaaaaaaaaaaaaaaaa") == []          # entropy
    with pytest.raises(ConfigError) as exc:
        detectors_from_config([{"id": "custom.t", "class": "secret", "pattern": "x+",
                                "max_width": 9, "entropy": 9, "confidence": "sure",
                                "keywords": [""]}], "<t>")
    assert {i.field for i in exc.value.issues} == {
        "detectors[0].entropy", "detectors[0].confidence", "detectors[0].keywords"}
