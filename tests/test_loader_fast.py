"""The event-based loader must build exactly what the detailed loader builds."""

from __future__ import annotations

import pytest

from provisioner import loader

DOCUMENTS = [
    "",
    "users: []",
    "users:\n  - name: a\n    password: x\n    tags: [management, monitoring]\n",
    "a: no\nb: 0123\nc: 1.5\nd: ~\ne: '007'\nf: \"yes\"\ng: 2001-12-14\n",
    "x-base: &base {vhost: /, write: w}\nusers: [{<<: *base, read: r}]\n",
    "x-a: &a {p: 1}\nx-b: &b {q: 2}\nm: {<<: [*a, *b], p: 3}\n",
    "m: {p: 0, <<: {p: 1, q: 2}}\n",
    "list: &l [1, 2]\ncopy: *l\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "nested: [[a, b], {c: [d]}]\n",
    "'quoted key': 1\n\"no\": 2\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_fast_load_matches_detailed(text: str) -> None:
    fast = loader.load_text(text, "users.yaml")
    detailed = loader._detailed_load(text, "users.yaml")
    assert fast.data == detailed.data


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",
        "? [a]\n: 1\n",
        "m: {<<: 1}\n",
        "a: [1\n",
        "---\na: 1\n---\nb: 2\n",
        "a: *missing\n",
        "a: !custom 1\n",
    ],
)
def test_fast_load_defers_problems(text: str) -> None:
    with pytest.raises(loader._NeedsDetail):
        loader._fast_load(text)


def test_positions_recorded_on_first_use() -> None:
    document = loader.load_text("users:\n  - name: a\n", "users.yaml")
    assert (
        document.source.where(("users", 0, "name")) == "users.yaml:2:11: users[0].name"
    )


def test_fast_load_counts_alias_expansion() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 7):
        lines.append(
            f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]"
        )
    with pytest.raises(loader._NeedsDetail):
        loader._fast_load("\n".join(lines))


def test_fast_load_accepts_large_plain_file() -> None:
    entry = "  - {name: u, permissions: [{vhost: /, read: r}]}\n"
    data = loader._fast_load("users:\n" + entry * 20_000)
    assert len(data["users"]) == 20_000
