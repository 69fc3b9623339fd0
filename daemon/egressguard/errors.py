"""Errors a user can act on.

Every failure that reaches a person (bad policy, missing kernel feature, missing privilege) is one
of these, rendered as one line that names the file/line/field or the fix. `egressguard run` and
`egressguard check` print them and exit 2; they are never shown as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class EgressGuardError(Exception):
    """Base class: the message is meant for the operator, as is."""


@dataclass
class ConfigIssue:
    """One problem in a configuration or detector-pack file."""

    file: str
    line: int | None        # 1-based, None when the problem is not tied to a line
    field: str              # dotted path, e.g. "rules[2].destination.cidr[0]"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(EgressGuardError):
    """One or more problems in a configuration file; str() lists every one, one per line."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class EnvironmentProblem(EgressGuardError):
    """The host lacks something egressguard needs (privilege, kernel feature, headers, cgroup2).

    The message says what is missing and how to fix it."""
