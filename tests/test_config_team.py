"""The team-approval keys in the policy file: parsed values and every problem with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

from egressguard.approvals.quorum import QuorumSpec
from egressguard.config import check_config, load_config
from egressguard.errors import ConfigIssue

USERS = {"alice": 1001, "bob": 1003, "carol": 1004}.get
KNOWN = {"secret.aws_access_key_id", "pii.email"}

FULL = """\
scope: {cgroup: /ai-agents}
approvals:
  approvers: [alice, bob, carol]
  inline_wait: 20s
  request_ttl: 1h
  grant_ttl: 10m
  max_grant_ttl: 2h
  break_glass: true
  identities:
    - {cert: alice.corp.example, user: alice}
    - {slack: U024BE7LH, user: bob}
  remote: {listen: "0.0.0.0:9443", cert: tls/server.pem, key: tls/server.key, ca: tls/ca.pem}
  chat:
    slack: {webhook_url: "https://hooks.example.test/T/B/x", signing_secret_file: slack.secret,
            callback_listen: "127.0.0.1:8089"}
    webhook: {url: "https://alerts.example.test/egressguard"}
    retries: 3
rules:
  - name: secrets-need-two
    detected: [secret.aws_access_key_id]
    action: hold
    approvals: {required: 2, approvers: [alice, bob, "uid:1004"]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def issues(tmp_path: Path, text: str) -> list[ConfigIssue]:
    return check_config(write(tmp_path, text), KNOWN, resolve_user=USERS)


def find(found: list[ConfigIssue], field: str) -> ConfigIssue:
    hits = [i for i in found if i.field == field]
    assert hits, f"no issue for {field}; got:\n" + "\n".join(map(str, found))
    return hits[0]


def test_full_team_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), KNOWN, resolve_user=USERS)
    a = cfg.approvals
    assert a.timeout == 20.0
    t = a.team
    assert (t.request_ttl, t.grant_ttl, t.max_grant_ttl, t.break_glass) == (3600, 600, 7200, True)
    assert t.identities.certs["alice.corp.example"].uid == 1001
    assert t.identities.slack["U024BE7LH"].uid == 1003
    assert t.remote is not None and t.remote.listen == ("0.0.0.0", 9443)
    assert t.remote.ca == str(tmp_path / "tls" / "ca.pem")
    assert t.chat is not None and t.chat.retries == 3
    assert t.chat.slack is not None and t.chat.slack.callback_listen == ("127.0.0.1", 8089)
    assert t.chat.webhook_url == "https://alerts.example.test/egressguard"
    assert cfg.rules[0].approvals == QuorumSpec(required=2,
                                                approvers=("uid:1001", "uid:1003", "uid:1004"))


def test_defaults_keep_the_old_timeout_name(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "scope: {cgroup: /a}\napprovals: {timeout: 30s}\n"),
                      KNOWN, resolve_user=USERS)
    assert cfg.approvals.timeout == 30.0
    assert cfg.approvals.team.request_ttl == 3600 and cfg.approvals.team.break_glass is False
    assert cfg.approvals.team.remote is None and cfg.approvals.team.chat is None


def test_every_problem_is_named(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        scope: {cgroup: /ai-agents}
        approvals:
          approvers: [alice]
          inline_wait: 30s
          timeout: 10s
          request_ttl: 10s
          grant_ttl: 3h
          max_grant_ttl: 1h
          break_glass: "yes"
          identities:
            - {slack: alice@corp.example, user: alice}
            - {cert: a, slack: U1234567, user: alice}
            - {cert: b, user: nobody-here}
          remote: {listen: "nowhere", cert: a.pem}
          chat:
            slack: {webhook_url: "ftp://x", signing_secret_file: s, callback_listen: ":1"}
            retries: -1
        rules:
          - name: two
            detected: [secret.aws_access_key_id]
            action: hold
            approvals: {required: 3, approvers: [alice, bob]}
          - name: not-a-hold
            detected: [pii.email]
            action: mask
            approvals: {required: 1}
          - name: global-too-small
            detected: [pii.email]
            action: hold
            approvals: {required: 2}
        """)
    assert find(found, "approvals.timeout").line == 5
    assert find(found, "approvals.request_ttl").line == 6
    assert find(found, "approvals.grant_ttl").line == 7
    assert find(found, "approvals.break_glass").line == 9
    assert "not a Slack user id" in find(found, "approvals.identities[0].slack").message
    assert "exactly one" in find(found, "approvals.identities[1]").message
    assert "no such user" in find(found, "approvals.identities[2].user").message
    assert find(found, "approvals.remote.key").line == 14
    assert find(found, "approvals.remote.listen").line == 14
    assert "http(s) URL" in find(found, "approvals.chat.slack.webhook_url").message
    assert find(found, "approvals.chat.slack.callback_listen").line == 16
    assert find(found, "approvals.chat.retries").line == 17
    assert "never be met" in find(found, "rules[0].approvals.approvers").message
    assert "only a hold rule" in find(found, "rules[1].approvals").message
    assert "never be met" in find(found, "rules[2].approvals.required").message


def test_shipped_team_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "team-approvals.yaml"
    cfg = load_config(example, {"secret.private_key", "secret.aws_access_key_id"},
                      resolve_user=USERS)
    assert cfg.approvals.timeout == 20.0 and cfg.approvals.team.request_ttl == 3600
    assert cfg.rules[0].approvals.required == 2
    assert cfg.approvals.team.identities.slack["U0G9QF9C6"].uid == 1004


def test_missing_users_give_no_follow_on_quorum_error(tmp_path: Path) -> None:
    """On a host without alice, bob and carol, the shipped team example reports the missing
    users, and only them: not also 'lists 0 different approver(s) but required is 2'."""
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "team-approvals.yaml"
    missing = check_config(example, {"secret.private_key", "secret.aws_access_key_id"},
                           resolve_user=lambda name: None)
    assert missing and all("no such user" in i.message for i in missing), missing
    # the global list is incomplete too: a rule relying on it gets no follow-on either
    found = issues(tmp_path, """\
        scope: {cgroup: /a}
        approvals: {approvers: [alice, ghost]}
        rules:
          - {name: r, detected: [pii.email], action: hold, approvals: {required: 2}}
        """)
    assert [i.field for i in found] == ["approvals.approvers[1]"], found
