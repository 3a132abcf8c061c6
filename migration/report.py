"""What a migration did (or, dry, would do): counts per step and every problem, with its place."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MigrationReport", "StepReport"]


@dataclass
class StepReport:
    """One step's outcome: counts by what happened (`written`, `already_there`...) and
    problems (a malformed row with its line, a file it could not use)."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "problems": self.problems,
            "notes": self.notes,
            "items": self.items,
        }


@dataclass
class MigrationReport:
    source: str
    destination: str
    dry_run: bool
    steps: dict[str, StepReport] = field(default_factory=dict)

    def step(self, name: str) -> StepReport:
        return self.steps.setdefault(name, StepReport(name))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "dry_run": self.dry_run,
            "steps": {name: step.to_json() for name, step in self.steps.items()},
        }

    def text(self) -> str:
        """The report for a person: one block per step."""
        verb = "would migrate" if self.dry_run else "migrated"
        lines = [f"{verb} {self.source} -> {self.destination}"]
        for step in self.steps.values():
            counts = ", ".join(f"{count} {what}" for what, count in sorted(step.counts.items()))
            lines.append(f"  {step.name}: {counts or 'nothing found'}")
            lines += [f"    note: {note}" for note in step.notes]
            lines += [f"    problem: {problem}" for problem in step.problems[:50]]
            if len(step.problems) > 50:
                lines.append(f"    ... and {len(step.problems) - 50} more problems")
        return "\n".join(lines)
