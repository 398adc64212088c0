"""Quantities are whole multiples of the market's step, rounded down (toward less risk)."""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from rulekit.decision.quantity import floor_to_step, floor_to_step_vector, step_units


@pytest.mark.parametrize("step, units, scale", [
    (0.0001, 1, 10_000), (0.001, 1, 1_000), (0.1, 1, 10), (1, 1, 1), (0.025, 25, 1_000),
    (0.00001, 1, 100_000), (5, 5, 1),
])
def test_step_is_read_as_exact_integers(step, units, scale):
    assert step_units(step) == (units, scale)


@pytest.mark.parametrize("quantity, step, expected", [
    (100 / 2250, 0.0001, 0.0444),      # the golden example
    (0.0444, 0.0001, 0.0444),          # already on the step: kept, not dropped a step
    (0.3, 0.1, 0.3),                   # 0.3 / 0.1 = 2.9999999999999996 in floats
    (0.7, 0.1, 0.7),
    (1.9999999, 1, 1.0),
    (0.0999, 0.025, 0.075),
    (0.00009, 0.0001, 0.0),
])
def test_floor_to_step_by_hand(quantity, step, expected):
    units, scale = step_units(step)
    assert floor_to_step(quantity, units, scale) == expected
    assert floor_to_step_vector(np.array([quantity]), units, scale)[0] == expected


def test_rounded_quantity_never_exceeds_the_raw_one_and_misses_by_less_than_a_step():
    rng = np.random.default_rng(3)
    for step in (0.0001, 0.001, 0.01, 0.1, 0.025, 0.00001):
        units, scale = step_units(step)
        raw = rng.uniform(0, 50, 2_000) * rng.choice([1e-4, 1e-2, 1, 100], 2_000)
        vector = floor_to_step_vector(raw, units, scale)
        for q, v in zip(raw, vector, strict=False):
            s = floor_to_step(q, units, scale)
            assert s == v
            assert Decimal(s) <= Decimal(q)
            assert Decimal(q) - Decimal(s) < Decimal(step) * Decimal("1.000001")
            assert (Decimal(repr(s)) / Decimal(repr(step))) % 1 == 0


def test_bad_quantities_do_not_become_sizes():
    assert math.isnan(floor_to_step(math.nan, 1, 10_000))
    assert math.isnan(floor_to_step(math.inf, 1, 10_000))
    assert floor_to_step(-1.0, 1, 10_000) == 0.0
    vector = floor_to_step_vector(np.array([math.nan, math.inf, -1.0]), 1, 10_000)
    assert math.isnan(vector[0]) and math.isnan(vector[1]) and vector[2] == 0.0
