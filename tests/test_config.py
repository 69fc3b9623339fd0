"""config.py: the schema, every issue collected with file/line/field, never a traceback."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from egressguard.config import (Config, DetectorsConfig, check_config, config_from_text,
                                load_config)
from egressguard.errors import ConfigError, ConfigIssue
from egressguard.model import Action

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
USERS = {"alice": 1001, "ci": 1002, "bob": 1003}.get
KNOWN = {"secret.aws_access_key_id", "secret.github_token", "secret.private_key", "pii.email",
         "pii.credit_card", "pii.us_ssn"}

MINIMAL = "scope: {cgroup: /ai-agents}\n"


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def issues_of(tmp_path: Path, text: str, known=KNOWN) -> list[ConfigIssue]:
    return check_config(write(tmp_path, text), known, resolve_user=USERS)


def find(issues: list[ConfigIssue], field: str) -> ConfigIssue:
    hits = [i for i in issues if i.field == field]
    assert hits, f"no issue for {field}; got:\n" + "\n".join(map(str, issues))
    return hits[0]


# -- the shipped examples -------------------------------------------------------------------

def test_example_policy_is_valid_and_complete():
    cfg = load_config(EXAMPLES / "policy.yaml", KNOWN, resolve_user=USERS)
    assert cfg.scope.cgroup == "/ai-agents"
    assert cfg.proxy.listen == ("127.0.0.1", 15001)
    assert cfg.proxy.listen6 == ("::1", 15001)
    assert cfg.proxy.mark == 0x4547
    assert cfg.proxy.sniff_timeout == 1.0
    assert cfg.proxy.max_held_bytes == 16 * 1024 * 1024
    assert cfg.proxy.udp == "dns-only" and cfg.proxy.dns_ports == (53,)
    assert [a.uid for a in cfg.approvals.approvers] == [1001, 0]
    assert cfg.approvals.timeout == 120.0 and cfg.approvals.on_timeout == "deny"
    assert cfg.default_action is Action.ALLOW
    assert [r.name for r in cfg.rules] == ["no-paste-sites", "no-exfil-network",
                                          "build-bot-may-push", "secrets-need-approval",
                                          "no-emails-out"]
    assert cfg.rules[0].destination.host == ("*.pastebin.com",)
    assert cfg.rules[0].destination.port == ()
    assert cfg.rules[1].destination.port == ((80, 80), (443, 443))
    assert cfg.rules[2].process.user[0].uid == 1002
    assert cfg.rules[3].detected == ("secret.*",)
    custom = cfg.detectors.custom[0]
    assert (custom.id, custom.cls, custom.pattern) == ("custom.ticket_token", "secret",
                                                       "TKT-[0-9A-F]{24}")
    assert custom.line > 1 and custom.field == "detectors.custom[0]"
    assert custom.raw["pattern"] == "TKT-[0-9A-F]{24}"


def test_example_policy_reports_missing_users_on_this_host():
    # alice and ci are placeholders: on a host without them, check says so (and nothing else).
    issues = check_config(EXAMPLES / "policy.yaml", KNOWN, resolve_user=lambda n: None)
    assert {i.field for i in issues} == {"approvals.approvers[0]", "rules[2].process.user[0]"}


def test_demo_config_is_valid_on_this_host():
    cfg = load_config(EXAMPLES / "demo.yaml", KNOWN)
    assert cfg.state_dir == str(ROOT / "demo-state")        # relative to the file
    assert cfg.audit.path == str(ROOT / "demo-state" / "audit.jsonl")
    assert cfg.approvals.approver_uids == {0}


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, Config)
    assert cfg.proxy.listen6 == ("::1", 15001)
    assert cfg.audit.path == "/var/log/egressguard/audit.jsonl"
    assert cfg.state_dir == "/var/lib/egressguard"
    assert cfg.rules == ()


def test_listen6_defaults_to_listen_port(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "proxy: {listen: '127.0.0.1:9999'}\n"))
    assert cfg.proxy.listen6 == ("::1", 9999)


@pytest.mark.parametrize("text,secs", [("120s", 120), ("2m", 120), ("1h", 3600),
                                       ("500ms", 0.5), ("1.5s", 1.5), ("7", 7), ("0.25", 0.25)])
def test_durations(tmp_path, text, secs):
    cfg = load_config(write(tmp_path, MINIMAL + f"approvals: {{timeout: {text}}}\n"))
    assert cfg.approvals.timeout == pytest.approx(secs)


@pytest.mark.parametrize("text,n", [("16MiB", 16 << 20), ("64KiB", 64 << 10), ("1GiB", 1 << 30),
                                    ("4096", 4096), ("100B", 100)])
def test_sizes(tmp_path, text, n):
    cfg = load_config(write(tmp_path, MINIMAL + f"proxy: {{max_held_bytes: {text}}}\n"))
    assert cfg.proxy.max_held_bytes == n


def test_bypass_loopback_forms_accepted(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "proxy: {bypass: ['127.0.0.1', '127.5.0.1:8080', "
                                                "'::1', '[::1]:9000']}\n"))
    assert len(cfg.proxy.bypass) == 4


def test_user_forms(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + textwrap.dedent("""\
        approvals: {approvers: [alice, "uid:0", 1234]}
        rules:
          - {name: r, process: {user: [bob, 0, "uid:7"]}, action: allow}
        """)), resolve_user=USERS)
    assert [a.uid for a in cfg.approvals.approvers] == [1001, 0, 1234]
    assert [u.uid for u in cfg.rules[0].process.user] == [1003, 0, 7]


def test_scalar_is_shorthand_for_one_item_list(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + textwrap.dedent("""\
        rules:
          - {name: r, destination: {host: "*.example.com", port: 443}, action: block}
        """)))
    assert cfg.rules[0].destination.host == ("*.example.com",)
    assert cfg.rules[0].destination.port == ((443, 443),)


# -- every problem, with file, line and field -----------------------------------------------

BAD = """\
scope: {cgroup: /}
proxy:
  listen: "127.0.0.1:99999"
  bypass: ["10.0.0.1", "127.0.0.1:80"]
  udp: dns_only
  sniff_timout: 1s
  max_held_bytes: 16MB
approvals:
  approvers: [mallory, "uid:x"]
  timeout: soon
  on_timeout: maybe
default_action: mask
rules:
  - name: r0
    destination: {cidr: ["10.0.0.0/33", "10.0.0.1/24"], port: [0, "9000-8000", "http"]}
    action: block
  - name: r0
    action: explode
  - name: r2
    action: mask
  - name: r3
    detected: ["secrte.*", "pii.emial", "secret"]
    action: hold
  - name: r4
    process: {exe: ["/usr/bin/[abc"], usr: [root]}
    destination: {host: ["https://evil.example/"]}
    action: allow
  - action: allow
"""


def test_every_issue_is_collected_with_line_and_field(tmp_path):
    issues = issues_of(tmp_path, BAD)
    text = "\n".join(map(str, issues))
    path = str(tmp_path / "policy.yaml")
    assert all(i.file == path for i in issues)
    assert all(i.line for i in issues), text

    assert find(issues, "scope.cgroup").line == 1
    assert "root cgroup" in find(issues, "scope.cgroup").message
    assert find(issues, "proxy.listen").line == 3
    bypass = find(issues, "proxy.bypass[0]")
    assert bypass.line == 4 and "loopback" in bypass.message
    assert not [i for i in issues if i.field == "proxy.bypass[1]"]
    assert "did you mean 'dns-only'" in find(issues, "proxy.udp").message
    unknown = find(issues, "proxy.sniff_timout")
    assert unknown.line == 6 and "did you mean 'sniff_timeout'" in unknown.message
    assert find(issues, "proxy.max_held_bytes").line == 7
    assert "mallory" in find(issues, "approvals.approvers[0]").message
    assert find(issues, "approvals.approvers[1]").line == 9
    assert find(issues, "approvals.timeout").line == 10
    assert find(issues, "approvals.on_timeout").line == 11
    assert "mask needs" in find(issues, "default_action").message

    cidr = find(issues, "rules[0].destination.cidr[0]")
    assert str(cidr) == f"{path}:15: rules[0].destination.cidr[0]: '10.0.0.0/33' is not a " \
                        "valid network"
    assert "did you mean '10.0.0.0/24'" in find(issues, "rules[0].destination.cidr[1]").message
    for j in range(3):
        assert find(issues, f"rules[0].destination.port[{j}]").line == 15
    dup = find(issues, "rules[1].name")
    assert dup.line == 17 and "duplicate" in dup.message and "line 14" in dup.message
    assert "explode" in find(issues, "rules[1].action").message
    assert "mask needs `detected`" in find(issues, "rules[2].action").message
    assert "matches no known detector" in find(issues, "rules[3].detected[0]").message
    assert find(issues, "rules[3].detected[0]").line == 22
    assert "did you mean 'pii.email'" in find(issues, "rules[3].detected[1]").message
    assert not [i for i in issues if i.field == "rules[3].detected[2]"]   # bare class is fine
    assert "unclosed '['" in find(issues, "rules[4].process.exe[0]").message
    assert "did you mean 'user'" in find(issues, "rules[4].process.usr").message
    assert "not a URL" in find(issues, "rules[4].destination.host[0]").message
    assert find(issues, "rules[5].name").line == 28

    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "policy.yaml", KNOWN, resolve_user=USERS)
    assert len(exc.value.issues) == len(issues)
    assert str(exc.value).count("\n") == len(issues) - 1


def test_malformed_yaml_names_line_and_column(tmp_path):
    issues = issues_of(tmp_path, "scope: {cgroup: /a}\nrules:\n  - name: x\n   action: [\n")
    assert len(issues) == 1
    assert issues[0].line == 4 and "column" in issues[0].message


def test_duplicate_yaml_keys_are_reported(tmp_path):
    issues = issues_of(tmp_path, MINIMAL + "default_action: allow\ndefault_action: block\n")
    assert issues[0].line == 3 and "duplicate key" in issues[0].message


def test_missing_scope_and_empty_file(tmp_path):
    assert "scope" in issues_of(tmp_path, "default_action: allow\n")[0].field
    assert issues_of(tmp_path, "")[0].message.startswith("the file is empty")


def test_missing_file_is_one_issue(tmp_path):
    issues = check_config(tmp_path / "nope.yaml")
    assert len(issues) == 1 and "cannot read" in issues[0].message


def test_hold_without_approvers(tmp_path):
    issues = issues_of(tmp_path, MINIMAL + "default_action: hold\n")
    assert find(issues, "approvals.approvers")


@pytest.mark.parametrize("text", [
    "[1, 2, 3]", "just a string", "42", "scope: 5", "scope: {cgroup: 5}", "rules: 5",
    "rules: [5, [1], null, {}]", "proxy: {listen: [1]}", "proxy: {mark: 'x', dns_ports: {a: 1}}",
    "approvals: {approvers: {a: b}}", "detectors: {custom: [5, {id: 1}]}",
    "rules: [{name: a, process: 5, destination: [1], detected: {}, action: allow}]",
    "? [a, b]\n: c", "a: &x [*x]", "scope: !!python/object:os.system {}", "\x00\x01",
    "rules: [{name: [a], action: {b: c}}]", "scope: {cgroup: '/a'}\nproxy: {udp: off}",
    "scope: {cgroup: ai-agents}", "scope: {cgroup: /a/../..}",
])
def test_junk_never_raises_anything_but_config_error(tmp_path, text):
    p = tmp_path / "junk.yaml"
    p.write_text(text)
    issues = check_config(p, KNOWN, resolve_user=USERS)
    assert issues and all(isinstance(i, ConfigIssue) for i in issues)
    with pytest.raises(ConfigError):
        load_config(p, KNOWN, resolve_user=USERS)


def test_invalid_utf8(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"scope: {cgroup: /a}\nrules: \xff\n")
    issues = check_config(p)
    assert issues[0].line == 2 and "UTF-8" in issues[0].message


# -- detector hook --------------------------------------------------------------------------

DETECTORS = MINIMAL + """\
approvals: {approvers: ["uid:0"]}
detectors:
  custom:
    - id: custom.ticket_token
      class: secret
      pattern: "TKT-[0-9A-F]{24}"
  disable: ["pii.us_*"]
rules:
  - {name: a, detected: [secret], action: hold}
  - {name: b, detected: [custom.ticket_token], action: block}
"""


def test_detector_hook_gets_section_and_custom_ids_count_as_known(tmp_path):
    seen: list[DetectorsConfig] = []

    def hook(d: DetectorsConfig) -> set[str]:
        seen.append(d)
        return KNOWN | {c.id for c in d.custom}

    cfg = load_config(write(tmp_path, DETECTORS), hook)
    assert seen[0].custom[0].id == "custom.ticket_token"
    assert seen[0].custom[0].line_of("pattern") == 7
    assert cfg.detectors.is_disabled("pii.us_ssn")
    assert not cfg.detectors.is_disabled("pii.email")


def test_detector_hook_errors_are_merged(tmp_path):
    def hook(d: DetectorsConfig) -> set[str]:
        if not d.custom:                # asked again without them: the other ids
            return set(KNOWN)
        c = d.custom[0]
        raise ConfigError([ConfigIssue(d.source, c.line_of("pattern"), c.field + ".pattern",
                                       "Hyperscan: pattern too large")])

    issues = check_config(write(tmp_path, DETECTORS), hook)
    assert find(issues, "detectors.custom[0].pattern").line == 7


def test_disable_glob_matching_nothing_and_rules_on_disabled(tmp_path):
    issues = issues_of(tmp_path, MINIMAL + """\
detectors: {disable: ["pii.*", "secret.nope"]}
rules:
  - {name: a, detected: ["pii.email"], action: mask}
  - {name: b, detected: [pii], action: block}
""")
    assert "matches no known detector" in find(issues, "detectors.disable[1]").message
    assert "only matches disabled" in find(issues, "rules[0].detected[0]").message
    assert "disabled" in find(issues, "rules[1].detected[0]").message


def test_no_hook_means_no_detector_check(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "rules: [{name: a, detected: [x.y], "
                                                "action: hold}]\napprovals: {approvers: [0]}\n"))
    assert cfg.rules[0].detected == ("x.y",)


def test_custom_detector_problems(tmp_path):
    issues = issues_of(tmp_path, MINIMAL + """\
detectors:
  custom:
    - {id: nodot, class: secret, pattern: "a"}
    - {id: custom.x, class: creds, pattern: "(", severity: extreme, max_width: 0, colour: red}
    - {id: custom.y}
""")
    assert "custom.name" in find(issues, "detectors.custom[0].id").message
    assert find(issues, "detectors.custom[1].class").line == 5
    assert "regular expression" in find(issues, "detectors.custom[1].pattern").message
    assert find(issues, "detectors.custom[1].severity")
    assert find(issues, "detectors.custom[1].max_width")
    assert find(issues, "detectors.custom[1].colour")
    assert find(issues, "detectors.custom[2].class").line == 6
    assert find(issues, "detectors.custom[2].pattern")


def test_config_from_text():
    cfg = config_from_text(MINIMAL, "inline.yaml")
    assert cfg.source == "inline.yaml"
    with pytest.raises(ConfigError) as exc:
        config_from_text("scope: {cgroup: /}\n", "inline.yaml")
    assert str(exc.value).startswith("inline.yaml:1: scope.cgroup:")


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(Exception):
        cfg.state_dir = "/tmp"  # type: ignore[misc]
    assert os.path.isabs(cfg.audit.path)


def test_proxy_must_listen_on_loopback(tmp_path) -> None:
    from egressguard.config import check_config
    p = tmp_path / "p.yaml"
    p.write_text("scope: {cgroup: /a}\nproxy: {listen: '0.0.0.0:15001'}\n")
    issues = check_config(p)
    assert [i.field for i in issues] == ["proxy.listen"]
    assert "loopback" in issues[0].message and issues[0].line == 2


# -- one pass: every independent problem at once ------------------------------------------------

ONE_PASS = """\
scope: {cgroup: /a}
approvals: {approvers: [uid:0]}
audit:
  path: audit.jsonl
  sinks:
    - {name: one, type: file, path: ship.jsonl, format: ecs}
    - {name: one, type: file, path: ship.jsonl, format: nosuch}
    - {name: two, type: file, path: ./ship.jsonl}
detectors:
  custom:
    - {id: custom.a, class: secret, pattern: "TKT-[0-9]+"}
    - {id: custom.b, class: secret, pattern: "x*"}
    - {id: custom.c, class: secret, pattern: "TOK-[0-9]{8}", validator: nosuch}
    - {id: custom.d, class: secret, pattern: "(unclosed"}
rules:
  - {name: r1, detected: ["nosuch.*"], action: block}
  - {name: r2, detected: ["custom.a", "custom.d"], action: frobnicate}
"""


def test_check_reports_every_independent_problem_in_one_pass(tmp_path):
    """Detector, rule-reference and sink problems together: before, a broken custom regex
    hid the pack loader's checks (validator, max_width, empty match) and the rules'
    references, and a sink with another problem hid its duplicate name."""
    from egressguard.scan.pack import all_detectors
    issues = check_config(write(tmp_path, ONE_PASS),
                          lambda d: [x.id for x in all_detectors(d)], resolve_user=USERS)
    got = {(i.line, i.field) for i in issues}
    want = {
        (7, "audit.sinks[1].format"),
        (7, "audit.sinks[1].name"),
        (7, "audit.sinks[1].path"),
        (8, "audit.sinks[2].path"),
        (11, "detectors.custom[0].max_width"),
        (12, "detectors.custom[1].pattern"),
        (13, "detectors.custom[2].validator"),
        (14, "detectors.custom[3].pattern"),
        (16, "rules[0].detected[0]"),
        (17, "rules[1].action"),
    }
    assert got == want, "\n".join(map(str, issues))
    text = {i.field: i.message for i in issues}
    assert "is already the name of the sink on line 6" in text["audit.sinks[1].name"]
    shared = str(tmp_path / "ship.jsonl")
    assert text["audit.sinks[2].path"].startswith(f"{shared} is also written by the sink 'one' "
                                                  "on line 6")
    assert "unbounded: set max_width" in text["detectors.custom[0].max_width"]
    assert "can match the empty string" in text["detectors.custom[1].pattern"]
    assert "unknown validator 'nosuch'" in text["detectors.custom[2].validator"]
    assert "'nosuch.*' matches no known detector" in text["rules[0].detected[0]"]
    # custom.d is broken (reported on its own line) but declared: no follow-on for rules[1]


def test_a_missing_pack_still_skips_reference_checks(tmp_path):
    """A pack that cannot be read makes its ids unknowable: no guessed 'matches no known
    detector' for a rule that may refer to it, only the missing file."""
    from egressguard.scan.pack import all_detectors
    issues = check_config(write(tmp_path, MINIMAL + "detectors: {packs: [nope.toml]}\n"
                                "rules:\n  - {name: r, detected: [secret.acme.*], action: block}\n"),
                          lambda d: [x.id for x in all_detectors(d)], resolve_user=USERS)
    assert [i.field for i in issues] == ["detectors.packs[0]"], issues
