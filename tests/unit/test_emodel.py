"""The G.107 E-model for G.711, against values worked out by hand from the formulas (not by the module).

MOS(93.2) = 1 + 0.035*93.2 + 93.2*33.2*6.8*7e-6 = 1 + 3.262 + 0.147286 = 4.409286
MOS(50)   = 1 + 1.75 + 50*(-10)*50*7e-6 = 2.575
Ie,eff(2.5 %) = 95*2.5/(2.5 + 4.3) = 237.5/6.8 = 34.9265;  Ie,eff(5 %) = 475/9.3 = 51.0753
Idd(200 ms): X = 1, 25*(2^(1/6) - 3*(1 + 3^-6)^(1/6) + 2) = 25*(1.122462 - 3.000686 + 2) = 3.0444
Idd(400 ms): X = 2, 25*(65^(1/6) - 3*(1 + (2/3)^6)^(1/6) + 2) = 25*(2.005175 - 3.042373 + 2) = 24.070
"""

from __future__ import annotations

import math

import pytest

from orchestrator.report.emodel import (
    EModelInputs,
    delay_impairment,
    estimate,
    ie_eff,
    mos_from_r,
    one_way_delay_ms,
)


@pytest.mark.parametrize(
    ("r", "mos"), [(93.2, 4.409286), (50.0, 2.575), (0.0, 1.0), (-3.0, 1.0), (100.0, 4.5), (120.0, 4.5)]
)
def test_r_to_mos_follows_annex_b(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=1e-6)


@pytest.mark.parametrize(("loss", "ie"), [(0.0, 0.0), (2.5, 34.9265), (5.0, 51.0753), (-1.0, 0.0)])
def test_effective_impairment_of_g711_random_loss(loss: float, ie: float) -> None:
    assert ie_eff(loss) == pytest.approx(ie, abs=1e-4)


@pytest.mark.parametrize(("ta", "idd"), [(0.0, 0.0), (100.0, 0.0), (200.0, 3.0444), (400.0, 24.070)])
def test_delay_impairment_is_zero_to_100_ms_then_grows(ta: float, idd: float) -> None:
    assert delay_impairment(ta) == pytest.approx(idd, abs=1e-3)


def test_a_clean_line_rates_the_g711_ceiling_and_loss_and_delay_lower_it() -> None:
    clean = estimate(EModelInputs(loss_pct=0.0, one_way_delay_ms=40.0))
    assert (clean.r, round(clean.mos, 4)) == (93.2, 4.4093)
    lossy = estimate(EModelInputs(loss_pct=2.5, one_way_delay_ms=32.9))
    assert lossy.r == pytest.approx(93.2 - 34.9265, abs=1e-4)  # 58.2735
    # 1 + 0.035*58.2735 + 58.2735*(-1.7265)*41.7265*7e-6 = 1 + 2.039573 - 0.029386
    assert lossy.mos == pytest.approx(3.010187, abs=1e-5)
    slow = estimate(EModelInputs(loss_pct=0.0, one_way_delay_ms=400.0))
    assert slow.r == pytest.approx(93.2 - 24.070, abs=1e-3) and slow.mos < clean.mos


def test_one_way_delay_adds_a_frame_and_a_two_jitter_buffer() -> None:
    assert one_way_delay_ms(12.0, 3.2) == pytest.approx(12 + 20 + 6.4)
    assert one_way_delay_ms(-3.0, 0.0) == 20.0  # a negative offset (clock noise) is no transit


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_bad_inputs_are_refused_with_the_field_named(bad: float) -> None:
    with pytest.raises(ValueError, match="loss_pct"):
        estimate(EModelInputs(loss_pct=bad, one_way_delay_ms=10.0))
    with pytest.raises(ValueError, match="bpl"):
        estimate(EModelInputs(loss_pct=1.0, one_way_delay_ms=10.0, bpl=0.0))
