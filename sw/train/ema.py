"""A stage's exponential moving average of the weights (stage key ``ema``)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from sw.train.checkpoint import cpu_state_dict


class Ema:
    """Exponential moving average of a model's floating-point state (parameters and buffers;
    others, e.g. LSQ's ``initialized`` flag, are copied). The decay ramps up as in
    tf.train.ExponentialMovingAverage with num_updates, min(decay, (1 + t) / (10 + t)), so a
    short stage averages about its last ninth of steps rather than clinging to its start."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for k, e in self.model.state_dict().items():
            if e.is_floating_point():
                e.lerp_(live[k], 1.0 - d)
            else:
                e.copy_(live[k])

    def state(self) -> dict:
        return {"updates": self.updates, "model": cpu_state_dict(self.model)}

    def load(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])
