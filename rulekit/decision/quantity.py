"""Rounding a quantity to the market's amount step, always down (toward less risk).

The step is held as integers, ``step = units / scale`` with ``scale`` a power of ten (0.0001 is
1/10000, 0.025 is 25/1000), so ``n * units / scale`` is the correctly rounded float of the exchange's
decimal quantity. ``floor(q * scale / units)`` can land one step off when the float division falls
just below or above an integer; the two corrections make ``result <= q < result + step`` hold in
float arithmetic, whatever the rounding of the division was.
"""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np


def floor_to_step(quantity: float, units: float, scale: float) -> float:
    """The largest whole number of steps not above ``quantity``; NaN in, NaN out; <= 0 gives 0."""
    if quantity != quantity or units != units or scale != scale or quantity == math.inf:
        return math.nan
    if quantity <= 0:
        return 0.0
    steps = math.floor(quantity * scale / units)
    if (steps + 1) * units / scale <= quantity:
        steps += 1
    elif steps > 0 and steps * units / scale > quantity:
        steps -= 1
    return steps * units / scale


def floor_to_step_vector(quantity: np.ndarray, units: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Element-wise ``floor_to_step``, the same corrections, the same NaN and zero rules."""
    quantity, units, scale = np.broadcast_arrays(np.asarray(quantity, dtype=float),
                                                 np.asarray(units, dtype=float),
                                                 np.asarray(scale, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        steps = np.floor(quantity * scale / units)
        steps += (steps + 1) * units / scale <= quantity
        steps -= (steps > 0) & (steps * units / scale > quantity)
        result = steps * units / scale
    result = np.where(quantity <= 0, 0.0, result)
    bad = np.isnan(quantity) | np.isnan(units) | np.isnan(scale) | (quantity == np.inf)
    return np.where(bad, np.nan, result)


def step_units(step: float) -> tuple[int, int]:
    """``step`` as integers (units, scale) with step = units / scale, read from its decimal text."""
    exact = Decimal(repr(float(step))).normalize()
    exponent = exact.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"an amount step must be a finite number, not {step!r}")
    scale = 10 ** max(0, -exponent)
    return int(exact * scale), scale
