"""The matrix: every benchmark becomes one test per commit × variant × GPU target, with a stable id.

Ids:

- a run that declares commits: ``test_name[<commit>-<variant>-<the test's own params>-<gpu>]``;
- otherwise: ``test_name[<the test's own params>-<variant>-<gpu>]``, the variant only where there are
  variants, so a run of one checkout keeps ids free of any commit and ``--benchmark-compare`` matches
  the same cell across commits by its ``fullname``.

``<gpu>`` is always there (``H200:1``, ``A100-80GB:8``, ``cpu``): results from different hardware must
never be compared under one name.

Which cells get a variant axis:

- with commits, every cell runs once per variant of its commit;
- without, variants that bring their own code (an environment recipe) apply to every cell, so a whole
  suite compares main against a branch;
- variants that only set environment variables apply to the tests that ask for them
  (``@pytest.mark.variants`` or the ``gpubench_variant`` fixture), which branch on the name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from .environments import EnvRecipe
from .hardware import Target

TARGET_PARAM = "gpubench_target"
VARIANT_PARAM = "gpubench_variant"
COMMIT_PARAM = "gpubench_commit"


@dataclass(frozen=True, eq=False)
class Variant:
    """A named way to run the same benchmark. ``env`` is set for the cell's duration; a ``recipe`` gives
    the variant code of its own, in an environment of its own. Compares equal to its name, so
    ``if gpubench_variant == "jax":`` reads as it should."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    recipe: EnvRecipe | None = None
    is_baseline: bool = False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Variant):
            return (self.name, dict(self.env), self.recipe) == (other.name, dict(other.env), other.recipe)
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Commit:
    """One commit of a dataset: its variants (baseline, human, agent...) and the targets it needs."""

    name: str
    variants: tuple[Variant, ...]
    targets: tuple[str, ...] = ()  # GPU specs this commit's cells run on; empty: the run's --gpu

    @property
    def baseline(self) -> Variant:
        return baseline_of(self.variants)

    def __str__(self) -> str:
        return self.name


def baseline_of(variants: Sequence[Variant]) -> Variant:
    """The variant others are compared with: the one marked ``baseline = true``, else the one named
    ``baseline``, else the first."""
    marked = [v for v in variants if v.is_baseline]
    if marked:
        return marked[0]
    named = [v for v in variants if v.name == "baseline"]
    return named[0] if named else variants[0]


@dataclass(frozen=True)
class Matrix:
    """What a run declares beyond GPU targets, after ``--gpubench-commit`` / ``--gpubench-variant``."""

    variants: Mapping[str, Variant] = field(default_factory=dict)
    commits: tuple[Commit, ...] = ()

    @property
    def has_environments(self) -> bool:
        return any(v.recipe is not None for v in self.variants.values())


def _test_asks_for_variant(metafunc: pytest.Metafunc) -> bool:
    if metafunc.definition.get_closest_marker("variants") is not None:
        return True
    function = getattr(metafunc, "function", None)
    return function is not None and VARIANT_PARAM in inspect.signature(function).parameters


def variants_for(metafunc: pytest.Metafunc, configured: Mapping[str, Variant]) -> list[Variant]:
    """The variant axis of one test: its marker's names (each looked up in ``configured``), else all of
    ``configured``."""
    marker = metafunc.definition.get_closest_marker("variants")
    if marker is not None:
        names = [str(arg) for arg in marker.args]
        if not names or len(set(names)) != len(names):
            pytest.fail(f"{metafunc.definition.nodeid}: @pytest.mark.variants needs distinct names, e.g. variants('fp32', 'bf16')", pytrace=False)
        return [configured.get(name, Variant(name)) for name in names]
    if not configured:
        pytest.fail(
            f"{metafunc.definition.nodeid} uses the '{VARIANT_PARAM}' fixture but declares no variants; "
            "add @pytest.mark.variants('a', 'b') or a [tool.gpubench.variants] table",
            pytrace=False,
        )
    return list(configured.values())


def _commit_variants(metafunc: pytest.Metafunc, commit: Commit) -> list[Variant]:
    marker = metafunc.definition.get_closest_marker("variants")
    if marker is None:
        return list(commit.variants)
    by_name = {v.name: v for v in commit.variants}
    unknown = [str(n) for n in marker.args if str(n) not in by_name]
    if unknown:
        pytest.fail(f"{metafunc.definition.nodeid}: @pytest.mark.variants names {unknown[0]!r}, which commit "
                    f"{commit.name} does not declare; its variants: {', '.join(by_name)}", pytrace=False)
    return [by_name[str(n)] for n in marker.args]


def parametrize_commits(metafunc: pytest.Metafunc, matrix: Matrix) -> None:
    """Runs that declare commits: the commit and its variants lead the id (call before the test's own
    parametrize markers are applied)."""
    pairs = [(commit, variant) for commit in matrix.commits for variant in _commit_variants(metafunc, commit)]
    metafunc.parametrize(
        (COMMIT_PARAM, VARIANT_PARAM),
        [pytest.param(commit, variant, id=f"{commit.name}-{variant.name}") for commit, variant in pairs],
        indirect=True,
    )


def parametrize_variants_and_target(
    metafunc: pytest.Metafunc,
    targets: Sequence[Target],
    skip_reasons: Mapping[Target, str],
    matrix: Matrix,
) -> None:
    """The variant (runs without commits) and GPU axes, after the test's own params: GPU last."""
    if not matrix.commits and (matrix.has_environments or _test_asks_for_variant(metafunc)):
        chosen = variants_for(metafunc, matrix.variants)
        metafunc.parametrize(VARIANT_PARAM, chosen, ids=[v.name for v in chosen], indirect=True)
    params = [
        pytest.param(t, id=t.id, marks=[pytest.mark.skip(reason=skip_reasons[t])] if t in skip_reasons else [])
        for t in targets
    ]
    metafunc.parametrize(TARGET_PARAM, params, indirect=True)


def cell_params(item: pytest.Item) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def comparison_key(item: pytest.Item) -> tuple[str, ...] | None:
    """Cells that differ only in their variant share a key: they are compared with each other, and run
    back to back (or interleaved). None for a cell with no variant axis."""
    params = cell_params(item)
    if VARIANT_PARAM not in params:
        return None
    rest = tuple(f"{name}={getattr(value, 'id', None) or getattr(value, 'name', None) or value!r}"
                 for name, value in sorted(params.items()) if name != VARIANT_PARAM)
    return (str(item.path), getattr(item, "originalname", item.name), *rest)


def group_siblings(items: list[pytest.Item]) -> list[pytest.Item]:
    """The same items, with the variants of one comparison moved next to the first of them, so a
    commit's baseline, human and agent cells of one benchmark run back to back on one GPU type."""
    by_key: dict[tuple[str, ...], list[pytest.Item]] = {}
    for item in items:
        key = comparison_key(item)
        if key is not None:
            by_key.setdefault(key, []).append(item)
    ordered: list[pytest.Item] = []
    placed: set[tuple[str, ...]] = set()
    for item in items:
        key = comparison_key(item)
        if key is None:
            ordered.append(item)
        elif key not in placed:
            placed.add(key)
            ordered.extend(by_key[key])
    return ordered


def siblings_of(item: pytest.Item, items: Sequence[pytest.Item]) -> list[pytest.Item]:
    key = comparison_key(item)
    return [item] if key is None else [other for other in items if comparison_key(other) == key]


def off_commit_target(item: pytest.Item) -> bool:
    """A cell whose commit declares the targets it needs, on a target it did not ask for."""
    params = cell_params(item)
    commit, target = params.get(COMMIT_PARAM), params.get(TARGET_PARAM)
    return isinstance(commit, Commit) and bool(commit.targets) and isinstance(target, Target) and target.id not in commit.targets
