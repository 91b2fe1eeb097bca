"""The golden model: integer ops of docs/arithmetic.md v2 (§10-§19): one frozen params object per op.

Each class holds every constant of one op (multipliers, shifts, ROM tables, widths) and its
``compute()`` is the golden integer model of that op; the RTL generators read the same object.
No torch here: ``sw/export.py`` builds these objects from a trained model, ``hw/golden/export_format.py``
rebuilds them from an export directory. Every value is an ``int`` or an int64 numpy array; every
intermediate is checked (at construction) to fit the int64 the golden model computes in, and the
widths the RTL needs are properties (``*_bits``).

Binary activations (1 bit) are carried as bits {0, 1} (§1: 1 <-> +1); multi-bit activations as
two's-complement codes; attention probabilities as unsigned codes (0 / 1 for Heaviside).
"""
