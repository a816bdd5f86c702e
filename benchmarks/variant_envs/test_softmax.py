"""One torch kernel from two versions of a small package, each version in its own environment."""

import pytest


def test_softmax(gpubench, gpubench_variant):
    import torch

    import tinykern  # imported in the cell: each variant's environment has its own version

    side = 1024 if gpubench.device == "cpu" else 8192
    x = torch.randn(side, side, device=gpubench.device)
    expected = torch.softmax(x, dim=-1)
    torch.testing.assert_close(tinykern.softmax(x), expected)  # both versions compute the same thing
    gpubench.extra_info.update(tinykern_version=tinykern.VERSION, tinykern_file=tinykern.__file__,
                               torch_file=torch.__file__)
    gpubench(tinykern.softmax, x, bytes=2 * x.numel() * x.element_size())
