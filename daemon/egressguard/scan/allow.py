"""Allowlists: values a detector matched that are known not to be secrets.

gitleaks calls these `allowlists`; the built-in pack and custom detectors use the same
mechanism (`allow:` and `stopwords:` in a pack). An allowlist suppresses a finding when its
regexes match the chosen target, or when the secret contains one of its stop words. With
`condition = "AND"` every criterion given must hold, with "OR" (the default) any one.

What a stream can check: the secret, the whole match, and the line up to the end of the
match (the bytes after it may not have arrived yet: waiting for the end of the line would
make a finding depend on how the stream was split). Criteria about file paths or commits do
not exist in a byte stream: an allowlist built from them alone never applies, and in an AND
allowlist they make the whole allowlist never apply (the importer records why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TARGETS = ("secret", "match", "line")


@dataclass(frozen=True)
class Allowlist:
    """One allowlist, compiled. `regexes` are Python byte patterns."""

    regexes: tuple[re.Pattern[bytes], ...] = ()
    target: str = "secret"                 # secret | match | line
    stopwords: tuple[bytes, ...] = ()      # lower-case
    condition: str = "or"                  # or | and
    never: bool = False                    # built only from criteria a stream cannot check

    def __post_init__(self) -> None:
        # gitleaks' generic rule has ~1,500 stop words: one alternation searched in C beats a
        # Python loop of substring tests on every finding.
        words = b"|".join(re.escape(w) for w in sorted(set(self.stopwords), key=len, reverse=True))
        object.__setattr__(self, "_stop_re", re.compile(words) if words else None)

    def suppresses(self, secret: bytes, match: bytes, line: bytes) -> bool:
        if self.never:
            return False
        checks: list[bool] = []
        if self.regexes:
            subject = {"secret": secret, "match": match, "line": line}[self.target]
            checks.append(any(rx.search(subject) for rx in self.regexes))
        if self._stop_re is not None:
            checks.append(self._stop_re.search(secret.lower()) is not None)
        if not checks:
            return False
        return all(checks) if self.condition == "and" else any(checks)


def suppressed(allowlists: tuple[Allowlist, ...], secret: bytes, match: bytes,
               line: bytes) -> bool:
    """True when any allowlist suppresses the finding."""
    return any(a.suppresses(secret, match, line) for a in allowlists)
