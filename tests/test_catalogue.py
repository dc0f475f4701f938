"""docs/checks.md documents exactly the checks the agent defines."""

from __future__ import annotations

import pathlib
import re

from kubectl_crilinks.agent.catalogue import CHECKS
from kubectl_crilinks.agent.records import SEVERITIES

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "checks.md"


def test_checks_doc_lists_every_check_with_its_severity():
    documented = dict(re.findall(r"^## `([a-z.-]+)` \((\w+)\)$", DOC.read_text(), re.M))
    assert documented == {check.id: check.severity for check in CHECKS.values()}


def test_every_check_has_a_known_severity_and_a_namespaced_id():
    for check in CHECKS.values():
        assert check.severity in SEVERITIES
        assert re.fullmatch(r"[a-z]+\.[a-z-]+", check.id)
