"""Which findings a report keeps: ``--checks``, ``--ignore`` and ``--baseline``.

``--checks`` narrows the report to some check ids (globs allowed: ``symlink.*``).
``--ignore`` drops findings by check id and path pattern, so that one known finding
can be accepted without silencing its whole class:

    --ignore symlink.dangling                     every finding of that check
    --ignore symlink.dangling:/usr/share/doc/*    that check, under that path
    --ignore /opt/vendor/*                        any check, under that path

``--baseline FILE`` keeps only what is new against a report saved earlier (``-o json``
or ``-o jsonl``, best with ``--severity info`` so that it holds everything). Findings
are matched by a fingerprint that survives what changes between two runs of the same
workload: the check, the namespace, the pod's name without the suffixes a controller
generates (``web-7d9f8c6b5d-x2k4q`` and ``web-5c4b7f9d8-p7m2z`` are both ``web``), the
container, the path and the link target. Node-wide findings keep their node. The
layer is left out on purpose: snapshot keys change with every pull of an image.

The agent still runs every check; this module only decides what the report shows, and
the report says how many findings each filter took away.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from kubectl_crilinks.errors import UsageError

Record = dict[str, Any]
Fingerprint = tuple[str, ...]

_GENERATED: Final = "bcdfghjklmnpqrstvwxz2456789"
"""The alphabet of the apiserver's generateName and of pod-template hashes."""
_POD_SUFFIX: Final = re.compile(rf"^(?P<base>.+)-[{_GENERATED}]{{5}}$")
_TEMPLATE_HASH: Final = re.compile(rf"^(?P<base>.+)-[{_GENERATED}]{{6,10}}$")


@dataclasses.dataclass(frozen=True)
class IgnoreRule:
    """One ``--ignore`` rule: a check glob and a path glob (either may be ``*``)."""

    check: str = "*"
    path: str = "*"

    def matches(self, finding: Record) -> bool:
        path = str(finding.get("path") or "")
        return fnmatch.fnmatchcase(str(finding.get("check")), self.check) and (
            self.path == "*" or fnmatch.fnmatchcase(path, self.path)
        )


def parse_checks(values: Sequence[str], *, known: Iterable[str]) -> tuple[str, ...]:
    """Return the check globs of ``--checks`` (comma lists allowed), each checked."""
    known = sorted(known)
    globs = tuple(g.strip() for value in values for g in value.split(",") if g.strip())
    for glob in globs:
        if not any(fnmatch.fnmatchcase(check, glob) for check in known):
            raise UsageError(
                f"--checks {glob!r} matches no check id; the ids are listed in "
                f"docs/checks.md, e.g. {', '.join(known[:4])} (globs such as "
                "'symlink.*' work)"
            )
    return globs


def parse_ignore(values: Sequence[str]) -> tuple[IgnoreRule, ...]:
    """Return the rules of ``--ignore CHECK``, ``CHECK:PATH`` or ``PATH``."""
    rules = []
    for value in values:
        text = value.strip()
        if not text:
            raise UsageError("--ignore needs CHECK, CHECK:PATH or PATH (e.g. /opt/*)")
        if text.startswith("/"):
            rules.append(IgnoreRule(path=text))
            continue
        check, _, path = text.partition(":")
        if path and not path.startswith(("/", "*")):
            raise UsageError(
                f"--ignore {value!r}: the path pattern after ':' must start with / "
                "or *, e.g. symlink.dangling:/usr/share/doc/*"
            )
        rules.append(IgnoreRule(check=check or "*", path=path or "*"))
    return tuple(rules)


def pod_base(pod: str | None) -> str:
    """Return a pod's name without a controller's generated suffixes."""
    if not pod:
        return ""
    match = _POD_SUFFIX.match(pod)
    if not match:
        return pod
    base = match["base"]
    hashed = _TEMPLATE_HASH.match(base)
    return hashed["base"] if hashed else base


def fingerprint(finding: Record) -> Fingerprint:
    """Return what identifies a finding across runs (see the module's docstring)."""
    pod = finding.get("pod")
    return (
        str(finding.get("check") or ""),
        "" if pod else str(finding.get("node") or ""),
        str(finding.get("namespace") or ""),
        pod_base(pod),
        str(finding.get("container") or ""),
        str(finding.get("path") or ""),
        str(finding.get("target") or ""),
    )


def load_baseline(path: str) -> frozenset[Fingerprint]:
    """Read a saved report (``-o json`` or ``jsonl``); fingerprint its findings."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UsageError(
            f"--baseline {path!r} cannot be read ({exc.strerror}): give a report "
            "saved with: kubectl crilinks inspect ... -o json --severity info > FILE"
        ) from exc
    return frozenset(fingerprint(f) for f in _findings_in(text, path=path))


def _findings_in(text: str, *, path: str) -> list[Record]:
    """Return the findings of a JSON report, or of JSON-lines records."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("kind") == "Report":
        return [f for f in document.get("findings") or [] if isinstance(f, dict)]
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UsageError(
                f"--baseline {path!r} is neither a crilinks JSON report nor JSON "
                f"lines (line {number} is not JSON): save one with -o json"
            ) from exc
        if isinstance(record, dict) and record.get("kind") == "finding":
            findings.append(record)
    return findings


@dataclasses.dataclass(frozen=True)
class Filter:
    """What the report keeps; :meth:`why_dropped` names the filter that drops."""

    checks: tuple[str, ...] = ()
    ignore: tuple[IgnoreRule, ...] = ()
    baseline: frozenset[Fingerprint] | None = None

    def why_dropped(self, finding: Record) -> str | None:
        """Return ``checks``, ``ignored`` or ``baseline`` for a dropped finding."""
        check = str(finding.get("check"))
        if self.checks and not any(fnmatch.fnmatchcase(check, g) for g in self.checks):
            return "checks"
        if any(rule.matches(finding) for rule in self.ignore):
            return "ignored"
        if self.baseline is not None and fingerprint(finding) in self.baseline:
            return "baseline"
        return None
