"""The one validation module: every params object, config and command checks its arguments here.

Each check raises a one-line :class:`BinbertError` naming the owner and the field. ``bool`` is
never an integer here (``True`` is an ``int`` to Python, not a width to binbert).
"""
from __future__ import annotations

import numpy as np

from hw.errors import BinbertError


def is_int(v, *, numpy: bool = False) -> bool:
    """An ``int`` (with ``numpy``: or a numpy integer), never a ``bool``."""
    kinds = (int, np.integer) if numpy else int
    return isinstance(v, kinds) and not isinstance(v, (bool, np.bool_))


def is_number(v) -> bool:
    """An ``int`` or ``float``, never a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_value(v, message: str, *, lo: int | None = None, hi: int | None = None,
              numpy: bool = False) -> int:
    """``v`` as an int when it is an integer (:func:`is_int`) in [lo, hi]; else ``message``."""
    if not is_int(v, numpy=numpy) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BinbertError(message)
    return int(v)


def number_value(v, message: str, *, lo: float | None = None, below: float | None = None) -> float:
    """``v`` when it is a number (:func:`is_number`) with lo <= v < below; else ``message``."""
    if not is_number(v) or (lo is not None and not v >= lo) or (below is not None and not v < below):
        raise BinbertError(message)
    return v


def positive_int(owner: str, name: str, v) -> int:
    """A block dimension: an integer >= 1."""
    return int_value(v, f"{owner}: {name}={v!r} must be an integer >= 1", lo=1)


def int_field(owner: str, name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    """A golden op's integer constant (numpy integers accepted), optionally in [lo, hi]."""
    v = int_value(v, f"{owner}.{name}={v!r} must be an integer", numpy=True)
    return int_value(v, f"{owner}.{name}={v} out of range [{lo}, {hi}]", lo=lo, hi=hi)


def bounded_int(owner: str, name: str, v, lo: int, hi: int | None = None) -> int:
    """A block field: an integer (numpy integers accepted) in lo..hi (``hi`` None: no upper
    bound), as an int; the type and the range are refused with messages of their own."""
    v = int_value(v, f"{owner}: {name}={v!r} must be an integer", numpy=True)
    rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    return int_value(v, f"{owner}: {name}={v} must be {rng}", lo=lo, hi=hi)


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


def codes_in(owner: str, name: str, x, lo: int, hi: int) -> np.ndarray:
    """Integer inputs of an op, every value in [lo, hi], as int64."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise BinbertError(f"{owner}: {name} must be integers, got {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise BinbertError(f"{owner}: {name} outside [{lo}, {hi}] "
                           f"(min {int(x.min())}, max {int(x.max())})")
    return x


def choice(name: str, value, choices) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise BinbertError(f"{name}={value!r} unknown: choose one of {', '.join(choices)}")
    return value


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise BinbertError(f"{name}={value!r} must be true or false")
    return value


def set_field(obj, name: str, value) -> None:
    """Set a derived field of a frozen dataclass from its ``__post_init__``."""
    object.__setattr__(obj, name, value)


def silence(obj, quiet: bool = True):
    """Mark an Amaranth must-use object (a Component or Elaboratable built only to read its
    signature or ports) as deliberately unused, so no warning is printed at exit; ``quiet``
    False re-arms the warning. Amaranth has no public switch for this (0.5)."""
    obj._MustUse__silence = quiet
    return obj


def params_of(component, params, cls):
    """A component's ``params``, when it is a ``cls``; else the component (a must-use Amaranth
    object that will never be elaborated) is silenced and the constructor refused."""
    if not isinstance(params, cls):
        silence(component)
        raise BinbertError(f"{type(component).__name__}: params must be {cls.__name__}, "
                           f"got {type(params).__name__}")
    return params
