"""The interface of every block's parameter object in hw/rtl (PEParams, MVUParams, ...).

A params object is frozen; it is the golden model and the generator of one block at once:

* ``compute(...)``: the block's bit-exact golden model (numpy, docs/arithmetic.md); its
  arguments are the block's input items (one array per input stream);
* ``create()``: the Amaranth component that must equal ``compute``;
* ``latency``: cycles from an item's last input beat (or first, as each class documents) to its
  last output beat without stalls;
* ``cycles``: the cycle model, steady-state cycles per item of the block's input stream with
  an always-ready output. Each class's ``cycles`` docstring names its item: an input beat (PE),
  an MMV group of vectors (MVU), a vector (requantizer, linear), a token (LayerNorm, FFN), a row
  of scores (probabilities), a sequence (attention, encoder layer).

Where a bench, the FPGA flow or a report reads an older name, it is an alias of ``cycles``:
``MVUParams.cycles_per_vector``, ``LayerNormUnitParams.cycles_per_token``,
``FfnParams.cycles_per_token``, ``EncoderLayerParams.cycles_per_sequence``.
"""
from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

__all__ = ["BlockParams", "DerivedParts"]


@runtime_checkable
class BlockParams(Protocol):
    """What every hw/rtl params class offers (see the module docstring)."""

    @property
    def latency(self) -> int:
        """Cycles from an item's input to its last output beat (no stalls)."""
        ...

    @property
    def cycles(self) -> int:
        """Steady-state cycles per item of the block's input stream."""
        ...

    def compute(self, *inputs: Any) -> Any:
        """The golden model: the block's outputs for its input items."""
        ...

    def create(self) -> Any:
        """The Amaranth component."""
        ...


class DerivedParts:
    """Base of the params classes whose child params (the blocks they are made of) are
    :func:`functools.cached_property`: built once, on first use, into the instance's
    ``__dict__`` (which a frozen dataclass still has). Pickling leaves them out, so a pickle
    (``sim.runner.params_key``, the copy a bench loads) holds the fields only, whichever parts
    were looked at, byte for byte what it held before the parts were cached."""

    def __getstate__(self):
        cached = {name for cls in type(self).__mro__ for name, attr in vars(cls).items()
                  if isinstance(attr, functools.cached_property)}
        return {k: v for k, v in self.__dict__.items() if k not in cached}
