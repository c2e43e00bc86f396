"""Render a plan for people: one line per change and a count, never a secret."""

from __future__ import annotations

from collections.abc import Sequence

from provisioner.plan import Action, Change, count_by_action

_MARKS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}


def render_plan(changes: Sequence[Change]) -> str:
    """Return the plan as text lines followed by a summary line."""
    lines = [f"{_MARKS[change.action]} {change.describe()}" for change in changes]
    lines.append(summary(changes))
    return "\n".join(lines)


def summary(changes: Sequence[Change]) -> str:
    """Return ``Plan: 2 to create, 1 to update, 0 to delete.`` or a no-op line."""
    if not changes:
        return "No changes: the broker matches the file."
    counts = count_by_action(changes)
    return (
        f"Plan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.DELETE]} to delete."
    )
