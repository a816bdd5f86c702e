"""The matrix: every benchmark becomes one test per commit × variant × GPU target, with a stable id.

Id scheme, left to right: ``test_name[<commit>-<the test's own params>-<variant>-<gpu>]``.

- ``<gpu>`` is always there (``H200:1``, ``A100-80GB:8``, ``cpu``): results from different hardware
  must never be compared under one name.
- ``<variant>`` appears when the test declares variants (``@pytest.mark.variants`` or
  ``[tool.gpubench.variants]``): ``baseline``, ``agent-patch``, ``flash``...
- ``<commit>`` appears only when a run declares several commits. A run of one checkout keeps ids free of
  any commit, so ``--benchmark-compare`` matches the same cell across commits by its ``fullname``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from .hardware import Target

TARGET_PARAM = "gpubench_target"
VARIANT_PARAM = "variant"
COMMIT_PARAM = "gpubench_commit"


@dataclass(frozen=True)
class Variant:
    """A named way to run the same benchmark; ``env`` is set for the cell's duration."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)


def variants_for(metafunc: pytest.Metafunc, configured: Mapping[str, Variant]) -> list[Variant]:
    marker = metafunc.definition.get_closest_marker("variants")
    if marker is not None:
        names = [str(arg) for arg in marker.args]
        if not names or len(set(names)) != len(names):
            pytest.fail(f"{metafunc.definition.nodeid}: @pytest.mark.variants needs distinct names, e.g. variants('fp32', 'bf16')", pytrace=False)
        return [configured.get(name, Variant(name)) for name in names]
    if not configured:
        pytest.fail(
            f"{metafunc.definition.nodeid} uses the 'variant' fixture but declares no variants; "
            "add @pytest.mark.variants('a', 'b') or a [tool.gpubench.variants] table",
            pytrace=False,
        )
    return list(configured.values())


def parametrize_cell(
    metafunc: pytest.Metafunc,
    targets: Sequence[Target],
    skip_reasons: Mapping[Target, str],
    variants: Mapping[str, Variant],
    commits: Sequence[str] = (),
) -> None:
    """Add the commit, variant and GPU axes to a benchmark that asks for them (GPU last, as ids read)."""
    if len(commits) > 1:
        metafunc.parametrize(COMMIT_PARAM, list(commits), ids=list(commits), indirect=True)
    if VARIANT_PARAM in metafunc.fixturenames:
        chosen = variants_for(metafunc, variants)
        metafunc.parametrize(VARIANT_PARAM, chosen, ids=[v.name for v in chosen], indirect=True)
    params = [
        pytest.param(t, id=t.id, marks=[pytest.mark.skip(reason=skip_reasons[t])] if t in skip_reasons else [])
        for t in targets
    ]
    metafunc.parametrize(TARGET_PARAM, params, indirect=True)
