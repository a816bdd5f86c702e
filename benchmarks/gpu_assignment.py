"""Which physical GPU served each cell, and when: read from a --benchmark-json of a gpubench run, and check
that no GPU ever held two cells at once.

    python benchmarks/gpu_assignment.py results.json [more.json ...]

Each cell's extra_info has the UUIDs of the GPUs it held (nvidia-smi's), the hold's start and a time before
its end (wall clock, shared by every worker on the host), and, where the cell recorded it, the UUID torch saw.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any


def cells_of(path: Path) -> list[dict[str, Any]]:
    return [b["extra_info"]["gpubench"] | {"name": b["name"]} for b in json.loads(path.read_text())["benchmarks"]]


def overlaps(cells: list[dict[str, Any]]) -> list[str]:
    """Every pair of cells whose holds on one GPU overlap, and every cell whose torch ran on a GPU it did not hold."""
    problems = []
    by_gpu: dict[str, list[tuple[float, float, str]]] = {}
    for cell in cells:
        for uuid in cell.get("gpu_uuids", []):
            by_gpu.setdefault(uuid, []).append((cell["gpus_held_from"], cell["gpus_held_until_at_least"], cell["name"]))
        seen = [cell["torch_device_uuid"]] if cell.get("torch_device_uuid") else cell.get("devices", [])
        for torch_uuid in seen:
            if not any(held.endswith(torch_uuid) for held in cell.get("gpu_uuids", [])):
                problems.append(f"{cell['name']}: torch ran on {torch_uuid}, which it did not hold")
    for uuid, spans in by_gpu.items():
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                problems.append(f"{uuid}: {a} and {b} overlap by {end - start:.3f} s")
    return problems


def print_assignment(cells: list[dict[str, Any]]) -> None:
    held = [c for c in cells if c.get("gpu_uuids")]
    if not held:
        print("    (no cell held a GPU)")
        return
    origin = min(c["gpus_held_from"] for c in held)
    for cell in sorted(held, key=lambda c: c["gpus_held_from"]):
        gpus = ",".join(u.removeprefix("GPU-")[:8] for u in cell["gpu_uuids"])
        print(f"    {cell['name']:44} GPU {gpus:36} held {cell['gpus_held_from'] - origin:7.2f}.."
              f"{cell['gpus_held_until_at_least'] - origin:7.2f} s  waited {cell['gpus_waited_s']:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+")
    args = parser.parse_args()
    ok = True
    for path in args.json:
        cells = cells_of(path)
        problems = overlaps(cells)
        ok &= not problems
        print(f"{path}: {len(cells)} cells on {len({u for c in cells for u in c.get('gpu_uuids', [])})} GPUs; "
              f"overlaps: {problems or 'none'}")
        print_assignment(cells)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
