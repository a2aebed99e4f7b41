"""The kernel's bulk exact numbers: rounding an exact array to float64 is outward, bit for bit
the float next to the exact value on the asked side, on every scale and magnitude."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.kernel.scaled import Scaled, round_fraction

numerators = st.integers(min_value=-(2**1100), max_value=2**1100) | st.integers(-(2**70), 2**70)
exponents = st.integers(min_value=-1250, max_value=1100) | st.integers(-80, 80)


@settings(max_examples=400, deadline=None)
@given(st.lists(numerators, min_size=1, max_size=8), exponents, st.sampled_from(["down", "up"]))
def test_rounding_over_a_power_of_two_scale_is_the_float_next_to_the_exact_value(
    values: list[int], exponent: int, direction: str
) -> None:
    scale = Fraction(2) ** exponent
    array = Scaled(np.array(values, dtype=object), scale)
    try:
        expected = [round_fraction(Fraction(v) * scale, direction) for v in values]
    except OverflowError:
        return
    assert array.to_float(direction).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(numerators, min_size=1, max_size=8), st.integers(1, 10**6), st.integers(1, 10**6))
def test_rounding_over_any_rational_scale_is_outward(
    values: list[int], top: int, bottom: int
) -> None:
    scale = Fraction(top, bottom)
    array = Scaled(np.array(values, dtype=object), scale)
    try:
        down, up = array.to_float("down"), array.to_float("up")
    except OverflowError:
        return
    for value, low, high in zip(values, down.tolist(), up.tolist(), strict=True):
        exact = Fraction(value) * scale
        assert Fraction(low) <= exact <= Fraction(high)
        assert math.nextafter(low, math.inf) > exact or Fraction(low) == exact
