"""policy/: pure evaluation from Process/Destination/Detection literals (no kernel, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressguard.config import config_from_text, load_config
from egressguard.model import Action, Destination, Detection, Process
from egressguard.policy.evaluate import ConnectDecision, Policy
from egressguard.policy.rules import glob_problem, parse_network, parse_port

ROOT = Path(__file__).resolve().parents[1]
USERS = {"alice": 1001, "ci": 1002}.get
KNOWN = {"secret.aws_access_key_id", "secret.github_token", "pii.email", "pii.credit_card"}

AGENT = Process(pid=100, uid=1000, comm="python3", exe="/usr/bin/python3.11",
                cgroup_path="/ai-agents/agent-1", systemd_unit="agent.service")
GIT_CI = Process(pid=101, uid=1002, comm="git", exe="/usr/bin/git")
UNKNOWN = Process(pid=102)           # nothing resolved yet


def det(detector: str, cls: str | None = None, start: int = 0) -> Detection:
    return Detection(detector=detector, cls=cls or detector.split(".")[0], start=start,
                     end=start + 20, preview="AKIA************MPLE", fingerprint="fp:1234")


def policy(text: str, default: str = "allow") -> Policy:
    cfg = config_from_text(f"scope: {{cgroup: /a}}\napprovals: {{approvers: [0]}}\n"
                           f"default_action: {default}\nrules:\n{text}", resolve_user=USERS)
    return Policy.from_config(cfg)


@pytest.fixture(scope="module")
def example() -> Policy:
    return Policy.from_config(load_config(ROOT / "docs/examples/policy.yaml", KNOWN,
                                          resolve_user=USERS))


# -- the example policy, end to end --------------------------------------------------------

def test_example_blocks_paste_site_by_host(example):
    # the name alone blocks, at any address and port: name and network are separate rules
    for ip, port in (("203.0.113.7", 443), ("198.51.100.7", 8443)):
        cd = example.decide_connect(AGENT, Destination(ip, port, "eu.pastebin.com"))
        assert cd.verdict.action is Action.BLOCK and cd.verdict.rule == "no-paste-sites"
        assert cd.verdict.reason == 'rule "no-paste-sites" matched'
        assert cd.content_rules == ()       # no content rule comes before it
    cd = example.decide_connect(AGENT, Destination("198.51.100.9", 443, "PasteBin.COM."))
    assert cd.verdict.rule == "default"          # *.pastebin.com does not match the apex
    cd = example.decide_connect(AGENT, Destination("198.51.100.9", 80, "X.PasteBin.com."))
    assert cd.verdict.rule == "no-paste-sites"   # case-insensitive, trailing dot ignored


def test_example_blocks_exfil_network_whatever_the_name(example):
    for host in ("example.com", ""):
        cd = example.decide_connect(AGENT, Destination("203.0.113.9", 443, host))
        assert cd.verdict.action is Action.BLOCK and cd.verdict.rule == "no-exfil-network"


def test_example_all_conditions_must_hold(example):
    # right network, wrong port: the network rule does not match
    cd = example.decide_connect(AGENT, Destination("203.0.113.7", 8443, "example.com"))
    assert cd.verdict.rule == "default"
    # right port, other network
    cd = example.decide_connect(AGENT, Destination("198.51.100.7", 443, "example.com"))
    assert cd.verdict.rule == "default"


def test_example_unknown_host_never_matches_a_host_condition(example):
    cd = example.decide_connect(AGENT, Destination("198.51.100.9", 443, ""))
    assert cd.verdict.rule == "default"
    assert example.needs_host


def test_example_process_rule_and_dead_content_rules(example):
    cd = example.decide_connect(GIT_CI, Destination("140.82.112.3", 443, "github.com"))
    assert cd.verdict.rule == "build-bot-may-push" and cd.verdict.action is Action.ALLOW
    assert cd.content_rules == ()   # the content rules come after it: dead for this flow
    # same exe, other user: not the bot
    other = Process(pid=5, uid=1000, comm="git", exe="/usr/bin/git")
    cd = example.decide_connect(other, Destination("140.82.112.3", 443, "github.com"))
    assert cd.verdict.rule == "default"
    assert [r.name for r in cd.content_rules] == ["secrets-need-approval", "no-emails-out"]


def test_example_content_decisions(example):
    cd = example.decide_connect(AGENT, Destination("192.0.2.10", 443, "api.example.com"))
    assert cd.verdict.action is Action.ALLOW and cd.needs_content

    nothing = example.decide_content(cd, [])
    assert nothing.verdict == cd.verdict and nothing.mask == ()

    unmatched = example.decide_content(cd, [det("pii.credit_card")])
    assert unmatched.verdict == cd.verdict           # no live rule names it: connect stands

    email = det("pii.email", start=5)
    masked = example.decide_content(cd, [email])
    assert masked.verdict.action is Action.MASK and masked.mask == (email,)
    assert masked.verdict.reason == 'rule "no-emails-out": pii.email detected'

    aws = det("secret.aws_access_key_id", start=40)
    both = example.decide_content(cd, [email, aws])
    assert both.verdict.action is Action.HOLD          # hold > mask
    assert both.verdict.rule == "secrets-need-approval"
    assert both.verdict.reason == ('rule "secrets-need-approval": secret.aws_access_key_id '
                                   'detected')
    assert both.mask == (email,)                       # still masked if the hold is approved
    assert both.matched == ((email, "no-emails-out"), (aws, "secrets-need-approval"))


def test_reasons_never_contain_matched_text(example):
    cd = example.decide_connect(AGENT, Destination("192.0.2.10", 443, "x"))
    d = Detection("secret.aws_access_key_id", "secret", 0, 20, "AKIA****", "fp")
    out = example.decide_content(cd, [d])
    assert "AKIA" not in out.verdict.reason and "fp" not in out.verdict.reason


# -- ordering and strength -----------------------------------------------------------------

def test_first_match_wins_and_default():
    p = policy("""\
  - {name: a, destination: {port: [443]}, action: allow}
  - {name: b, destination: {port: ["400-500"]}, action: block}
""", default="block")
    assert p.decide_connect(AGENT, Destination("192.0.2.1", 443)).verdict.rule == "a"
    assert p.decide_connect(AGENT, Destination("192.0.2.1", 444)).verdict.rule == "b"
    v = p.decide_connect(AGENT, Destination("192.0.2.1", 80)).verdict
    assert (v.rule, v.action) == ("default", Action.BLOCK)
    assert "default_action is block" in v.reason
    assert not p.needs_host


def test_strongest_action_wins_over_detections():
    p = policy("""\
  - {name: m, detected: [pii], action: mask}
  - {name: h, detected: ["secret.github_*"], action: hold}
  - {name: b, detected: ["secret.aws_*"], action: block, reason: never AWS keys}
  - {name: a, detected: [secret], action: allow}
""")
    cd = p.decide_connect(AGENT, Destination("192.0.2.1", 443))
    gh, aws, mail, other = (det("secret.github_token"), det("secret.aws_access_key_id"),
                            det("pii.email"), det("secret.private_key"))
    assert p.decide_content(cd, [mail, gh]).verdict.action is Action.HOLD
    out = p.decide_content(cd, [mail, gh, aws])
    assert out.verdict.action is Action.BLOCK
    assert out.verdict.reason == 'rule "b": secret.aws_access_key_id detected; never AWS keys'
    assert out.mask == (mail,)
    # first live rule per detection: `other` is only matched by the allow rule
    assert p.decide_content(cd, [other]).verdict.rule == "a"
    # ties: the earliest detection's rule explains the verdict
    out = p.decide_content(cd, [det("pii.email"), det("pii.credit_card")])
    assert out.verdict.rule == "m" and len(out.mask) == 2
    assert out.verdict.reason == 'rule "m": pii.email, pii.credit_card detected'


def test_content_rules_after_the_connect_rule_are_dead():
    p = policy("""\
  - {name: early, detected: [secret], action: hold}
  - {name: ok-host, destination: {cidr: ["192.0.2.0/24"]}, action: allow}
  - {name: late, detected: [pii], action: block}
""")
    cd = p.decide_connect(AGENT, Destination("192.0.2.5", 443))
    assert cd.verdict.rule == "ok-host"
    assert [r.name for r in cd.content_rules] == ["early"]
    assert p.decide_content(cd, [det("pii.email")]).verdict.rule == "ok-host"
    cd = p.decide_connect(AGENT, Destination("198.51.100.5", 443))
    assert [r.name for r in cd.content_rules] == ["early", "late"]


def test_content_rule_conditions_filter_live_rules():
    p = policy("""\
  - {name: only-agents, process: {cgroup: ["/ai-agents/*"]}, detected: [secret], action: block}
""")
    assert p.decide_connect(AGENT, Destination("192.0.2.1", 1)).content_rules
    assert not p.decide_connect(GIT_CI, Destination("192.0.2.1", 1)).content_rules


def test_bare_class_matches_custom_detectors():
    p = policy("  - {name: s, detected: [secret], action: hold}\n")
    cd = p.decide_connect(AGENT, Destination("192.0.2.1", 443))
    out = p.decide_content(cd, [det("custom.ticket_token", cls="secret")])
    assert out.verdict.action is Action.HOLD
    p = policy("  - {name: s, detected: ['secret.*'], action: hold}\n")
    cd = p.decide_connect(AGENT, Destination("192.0.2.1", 443))
    # an id glob is about ids: custom.* is not secret.* (README says: use the bare class)
    assert p.decide_content(cd, [det("custom.ticket_token", cls="secret")]).verdict.rule == \
        "default"


# -- conditions -----------------------------------------------------------------------------

def test_process_conditions():
    p = policy("""\
  - {name: py, process: {exe: ["/usr/bin/python3*"], comm: [python3]}, action: block}
  - {name: unit, process: {unit: ["agent*.service"]}, action: hold}
  - {name: uid, process: {user: [0]}, action: block}
""")
    assert p.decide_connect(AGENT, Destination("192.0.2.1", 1)).verdict.rule == "py"
    p2 = Process(pid=1, uid=5, comm="node", exe="/usr/bin/node", systemd_unit="agent-2.service")
    assert p.decide_connect(p2, Destination("192.0.2.1", 1)).verdict.rule == "unit"
    root = Process(pid=1, uid=0)
    assert p.decide_connect(root, Destination("192.0.2.1", 1)).verdict.rule == "uid"
    # nothing known about the process: no condition matches, uid -1 is not uid 0
    assert p.decide_connect(UNKNOWN, Destination("192.0.2.1", 1)).verdict.rule == "default"


def test_cidr_v4_v6_and_mapped():
    p = policy("""\
  - {name: v4, destination: {cidr: ["10.0.0.0/8", "192.0.2.7"]}, action: block}
  - {name: v6, destination: {cidr: ["2001:db8::/32"]}, action: hold}
""")
    assert p.decide_connect(AGENT, Destination("10.1.2.3", 1)).verdict.rule == "v4"
    assert p.decide_connect(AGENT, Destination("::ffff:10.1.2.3", 1)).verdict.rule == "v4"
    assert p.decide_connect(AGENT, Destination("192.0.2.7", 1)).verdict.rule == "v4"
    assert p.decide_connect(AGENT, Destination("192.0.2.8", 1)).verdict.rule == "default"
    assert p.decide_connect(AGENT, Destination("2001:db8::1", 1)).verdict.rule == "v6"
    assert p.decide_connect(AGENT, Destination("garbage", 1)).verdict.rule == "default"


def test_host_glob_forms():
    p = policy("  - {name: h, destination: {host: ['api.*.example.com', 'x?.io']}, "
               "action: block}\n")
    assert p.needs_host
    for host, hit in [("api.eu.example.com", True), ("API.EU.EXAMPLE.COM", True),
                      ("api.example.com", False), ("x1.io", True), ("x12.io", False),
                      ("", False)]:
        rule = p.decide_connect(AGENT, Destination("192.0.2.1", 443, host)).verdict.rule
        assert (rule == "h") is hit, host


def test_connect_time_hold_and_reason_text():
    p = policy("  - {name: ask, destination: {port: [22]}, action: hold, reason: ssh out}\n")
    v = p.decide_connect(AGENT, Destination("192.0.2.1", 22)).verdict
    assert v.action is Action.HOLD and v.reason == 'rule "ask" matched; ssh out'


def test_policy_refuses_mask_default():
    with pytest.raises(ValueError):
        Policy((), Action.MASK)


def test_connect_decision_is_reusable_literal():
    p = policy("  - {name: s, detected: [secret], action: block}\n")
    cd = p.decide_connect(AGENT, Destination("192.0.2.1", 443))
    assert isinstance(cd, ConnectDecision)
    a = p.decide_content(cd, [det("secret.github_token")])
    b = p.decide_content(cd, [det("secret.github_token")])
    assert a == b


# -- value checkers -------------------------------------------------------------------------

def test_value_checkers():
    assert parse_port(443) == (443, 443) and parse_port("8000-8100") == (8000, 8100)
    assert isinstance(parse_port(True), str) and isinstance(parse_port(70000), str)
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert isinstance(parse_network("10.0.0.0/33"), str)
    assert glob_problem("*.x.com", host=True) is None
    assert glob_problem("[ab", host=False) == "unclosed '[' in pattern"
    assert glob_problem("[]]", host=False) is None
    assert glob_problem("x.com:443", host=True)
