"""Argument checks shared by the quantizer configs and :class:`sw.qbert.QuantBertConfig`."""
from __future__ import annotations

from hw.errors import BinbertError

MIN_ACT_BITS, MAX_ACT_BITS = 2, 8


def check_choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise BinbertError(f"{name}={value!r} unknown: choose one of {', '.join(choices)}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise BinbertError(f"{name}={value!r} must be true or false")


def check_bits(name: str, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise BinbertError(f"{name}={bits!r} must be an integer")
    if not MIN_ACT_BITS <= bits <= MAX_ACT_BITS:
        raise BinbertError(f"{name}={bits} out of range: multi-bit activations need "
                           f"{MIN_ACT_BITS}..{MAX_ACT_BITS} bits")
    return bits

