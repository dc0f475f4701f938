"""docs/checks.md documents exactly the checks the agent defines, each one the same way.

Every check has a section headed ``## `ID` (severity)``, under the ``# ... `FAMILY.*```
heading of its family, that says in this order what the finding means, gives an
**Example:** of it, says **Why it matters:** and gives the **Fix:**. Headings and labels
are read outside fenced code blocks only, so a shell comment in an example is never
taken for a heading.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from kubectl_crilinks.agent.catalogue import CHECKS
from kubectl_crilinks.agent.records import SEVERITIES

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "checks.md"

CHECK_HEADING = re.compile(r"^## `([a-z.-]+)` \((\w+)\)$")
FAMILY_HEADING = re.compile(r"^# .*`([a-z]+)\.\*`")
PARTS = ("**Example:**", "**Why it matters:**", "**Fix:**")


@dataclasses.dataclass
class Section:
    """One check's section: the prefix its family heading names, and its lines.

    ``lines`` holds ``(fenced, text)`` pairs: ``fenced`` is True inside a code block.
    """

    check: str
    severity: str
    family: str | None
    lines: list[tuple[bool, str]] = dataclasses.field(default_factory=list)

    def part(self, label: str) -> list[tuple[bool, str]]:
        """Return the lines from ``label`` to the next label (or the section's end)."""
        starts = [i for i, (fenced, text) in enumerate(self.lines)
                  if not fenced and text.startswith(PARTS)]
        start = next((i for i in starts if self.lines[i][1].startswith(label)), None)
        if start is None:
            return []
        end = next((i for i in starts if i > start), len(self.lines))
        return self.lines[start:end]


def _sections(text: str) -> dict[str, Section]:
    """Split the page into check sections, telling code-block lines apart."""
    sections: dict[str, Section] = {}
    family, current, fenced = None, None, False
    for line in text.splitlines():
        # Inside a fence nothing is a heading or a label.
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith(("# ", "## ")):
            if current:
                current.lines.append((fenced, line))
            continue

        # A heading ends the section before it.
        if line.startswith("# "):
            found = FAMILY_HEADING.match(line)
            family, current = (found.group(1) if found else None), None
        else:
            found = CHECK_HEADING.match(line)
            current = Section(*found.groups(), family) if found else None
            if current:
                assert current.check not in sections, f"{current.check} twice"
                sections[current.check] = current
    return sections


SECTIONS = _sections(DOC.read_text())


def test_checks_doc_lists_every_check_with_its_severity():
    documented = dict(re.findall(r"^## `([a-z.-]+)` \((\w+)\)$", DOC.read_text(), re.M))
    assert documented == {check.id: check.severity for check in CHECKS.values()}
    assert {s.check: s.severity for s in SECTIONS.values()} == documented


def test_every_check_has_a_known_severity_and_a_namespaced_id():
    for check in CHECKS.values():
        assert check.severity in SEVERITIES
        assert re.fullmatch(r"[a-z]+\.[a-z-]+", check.id)


@pytest.mark.parametrize("check_id", sorted(CHECKS))
def test_checks_doc_section_gives_meaning_example_why_and_fix_in_order(check_id):
    lines = SECTIONS[check_id].lines
    starts = {label: [i for i, (fenced, text) in enumerate(lines)
                      if not fenced and text.startswith(label)] for label in PARTS}
    for label, found in starts.items():
        assert len(found) == 1, f"{check_id}: {label} {len(found)} times, not once"
    positions = [starts[label][0] for label in PARTS]
    assert positions == sorted(positions), f"{check_id}: parts not in order {PARTS}"
    assert any(text.strip() for _, text in lines[: positions[0]]), (
        f"{check_id}: no sentence on what it means before {PARTS[0]}")


@pytest.mark.parametrize("check_id", sorted(CHECKS))
def test_checks_doc_example_shows_the_finding_with_its_severity_and_id(check_id):
    example = SECTIONS[check_id].part("**Example:**")
    opening = f"{CHECKS[check_id].severity}  {check_id}  "
    assert any(fenced and text.startswith(opening) for fenced, text in example), (
        f"{check_id}: the example needs a code block opening with {opening!r}")


@pytest.mark.parametrize("check_id", sorted(CHECKS))
def test_checks_doc_fix_says_what_to_do(check_id):
    fix = " ".join(text for _, text in SECTIONS[check_id].part("**Fix:**"))
    assert len(fix.removeprefix("**Fix:**").split()) >= 5, (
        f"{check_id}: the Fix part is missing or a stub")


def test_checks_doc_groups_each_check_under_its_family():
    for section in SECTIONS.values():
        assert section.family == section.check.split(".")[0], (
            f"{section.check} sits under family {section.family!r}")
    families = [s.family for s in SECTIONS.values()]
    runs = [f for i, f in enumerate(families) if i == 0 or families[i - 1] != f]
    assert len(runs) == len(set(runs)), f"a family is split in two: {runs}"
