"""Amaranth blocks, one file per block: its frozen parameter object and its component.

Like :class:`amaranth.lib.crc.Parameters`: ``params.compute(...)`` is the bit-exact golden model
(numpy, via :mod:`hw.golden`, docs/arithmetic.md) and ``params.create()`` elaborates the Amaranth
component that must equal it; ``latency`` and ``cycles`` are its timing model (the protocol
:class:`hw.rtl.block.BlockParams`). Every bad parameter raises :class:`hw.errors.BinbertError`
with a one-line message naming the parameter.
"""
