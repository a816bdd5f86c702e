"""tinykern 2: softmax over the last axis, torch's fused kernel."""

VERSION = "2-fused"


def softmax(x):
    import torch

    return torch.softmax(x, dim=-1)
