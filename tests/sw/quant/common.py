"""Helpers shared by the sw.quant tests."""
import torch


def gauss(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)
