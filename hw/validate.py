"""Validation helpers shared by every params object: one-line BinbertErrors naming owner and field."""
from __future__ import annotations

import numpy as np

from hw.errors import BinbertError


def int_array(owner: str, name: str, a, *, ndim: int | None = None, lo: int | None = None,
          hi: int | None = None) -> np.ndarray:
    """Validate an integer array field and return it as a read-only int64 copy."""
    a = np.asarray(a)
    if a.dtype == np.uint64:
        if a.size and int(a.max()) >= 1 << 63:
            raise BinbertError(f"{owner}.{name}: values do not fit int64")
    elif not np.issubdtype(a.dtype, np.integer):
        raise BinbertError(f"{owner}.{name}: must be an integer array, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise BinbertError(f"{owner}.{name}: expected {ndim} axes, got shape {a.shape}")
    a = np.array(a, dtype=np.int64)
    if lo is not None and a.size and int(a.min()) < lo:
        raise BinbertError(f"{owner}.{name}: value {int(a.min())} below {lo}")
    if hi is not None and a.size and int(a.max()) > hi:
        raise BinbertError(f"{owner}.{name}: value {int(a.max())} above {hi}")
    a.flags.writeable = False
    return a


def int_field(owner: str, name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise BinbertError(f"{owner}.{name}={v!r} must be an integer")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BinbertError(f"{owner}.{name}={v} out of range [{lo}, {hi}]")
    return v


def set_field(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def codes_in(owner: str, name: str, x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise BinbertError(f"{owner}: {name} must be integers, got {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise BinbertError(f"{owner}: {name} outside [{lo}, {hi}] "
                           f"(min {int(x.min())}, max {int(x.max())})")
    return x
