"""Rule conditions that name endpoint catalog labels: `destination.provider` and `request`,
checked against the catalog so a typo is an error with a suggestion, not a dead rule."""

from __future__ import annotations

import difflib
import fnmatch
from functools import lru_cache
from typing import Any

from egressguard.policy.rules import RequestCond

REQUEST_KEYS = ("kind", "class")
CLASSES = ("inference", "dataset_export", "other")


@lru_cache(maxsize=1)
def _catalog() -> Any:
    from egressguard.catalog import Catalog
    return Catalog.builtin()


def _known(c: Any, n: Any, f: str, value: str, choices: list[str], what: str) -> bool:
    if any(fnmatch.fnmatchcase(x, value) for x in choices):
        return True
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (one of: {', '.join(choices)})"
    c.issue(n.line, f, f"{value!r} matches no {what}{hint}")
    return False


def parse_providers(c: Any, node: Any, f: str) -> tuple[str, ...]:
    ids = sorted(_catalog().ids)
    out = []
    for n, ff in c.items(node, f, absent_ok=True):
        g = c.glob(n, ff)
        if g is not None and _known(c, n, ff, g, ids, "provider in the endpoint catalog"):
            out.append(g)
    return tuple(out)


def parse_request_cond(c: Any, node: Any, f: str) -> RequestCond | None:
    m = c.mapping(node, f, REQUEST_KEYS)
    if m is None:
        return None
    kinds = sorted({e.kind for e in _catalog().endpoints} | {"other"})
    out: dict[str, list[str]] = {"kind": [], "class": []}
    for key, choices in (("kind", kinds), ("class", list(CLASSES))):
        for n, ff in c.items(m.get(key), f"{f}.{key}", absent_ok=True):
            g = c.glob(n, ff)
            if g is not None and _known(c, n, ff, g, choices, f"request {key}"):
                out[key].append(g)
    if not m:
        c.issue(node.line, f, "give `kind` and/or `class`")
    return RequestCond(tuple(out["kind"]), tuple(out["class"]))
