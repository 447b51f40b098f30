"""A MOS estimate from the ITU-T G.107 E-model, for one G.711 leg of a call.

    R = R0 - Is - Id - Ie,eff + A,  with the defaults (R0 - Is = 93.2 when A = 0, T = 0)
    Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)          (G.107 equation 7-29)
    Id ~ Idd(Ta) = 0 for Ta <= 100 ms, else 25 * ((1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2),
        X = log2(Ta / 100 ms)                                        (G.107 equation 7-28, mT = 100 ms)
    MOS = 1 for R < 0; 4.5 for R > 100; else 1 + 0.035 R + R (R - 60)(100 - R) 7e-6  (G.107 Annex B)

For G.711 Ie = 0 and, with random loss (BurstR = 1), Bpl = 4.3 (G.113 Appendix I, G.711 without packet
loss concealment). The talker-echo and listener-echo parts of Id are taken as the defaults' (echo
controlled, TELR 65 dB), so Id is the absolute-delay part alone: a conservative simplification that
says nothing of the acoustic echo the report measures separately.

Jitter is not an E-model input; it enters as delay: a jitter buffer that holds twice the mean jitter
adds that much to the one-way delay Ta (the usual rule of thumb, stated as an input on the page).

Pure arithmetic: no I/O, no numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_DEFAULT = 93.2  # R0 - Is with every G.107 default (Table 3), A = 0
IE_G711 = 0.0
BPL_G711 = 4.3  # G.113 Appendix I, G.711 with random loss, no PLC
FRAME_MS = 20.0  # a Twilio media frame: packetisation delay of one 20 ms frame


@dataclass(frozen=True, slots=True)
class EModelInputs:
    """What the estimate is computed from, each shown beside the result."""

    loss_pct: float  # Ppl: audio lost, percent of the frames
    one_way_delay_ms: float  # Ta: mouth-to-ear delay of this leg
    ie: float = IE_G711
    bpl: float = BPL_G711
    burst_r: float = 1.0  # 1: random loss


@dataclass(frozen=True, slots=True)
class EModelResult:
    inputs: EModelInputs
    ie_eff: float
    id: float
    r: float
    mos: float


def ie_eff(loss_pct: float, ie: float = IE_G711, bpl: float = BPL_G711, burst_r: float = 1.0) -> float:
    """Effective equipment impairment for packet loss Ppl (percent)."""
    ppl = max(0.0, loss_pct)
    return ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)


def delay_impairment(one_way_delay_ms: float) -> float:
    """Idd for an absolute one-way delay Ta (ms), with mT = 100 ms and sT = 1."""
    if one_way_delay_ms <= 100.0:
        return 0.0
    x = math.log2(one_way_delay_ms / 100.0)
    return float(25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2))


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the estimated MOS (conversational quality) for a rating R."""
    if r < 0:
        return 1.0
    if r > 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def estimate(inputs: EModelInputs) -> EModelResult:
    """R and MOS for one leg. Raises ValueError for a negative or non-finite input."""
    for name in ("loss_pct", "one_way_delay_ms", "ie", "bpl", "burst_r"):
        v = getattr(inputs, name)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"E-model input {name} must be a finite number >= 0, got {v!r}")
    if inputs.bpl <= 0 or inputs.burst_r <= 0:
        raise ValueError("E-model inputs bpl and burst_r must be > 0")
    ie_e = ie_eff(inputs.loss_pct, inputs.ie, inputs.bpl, inputs.burst_r)
    d = delay_impairment(inputs.one_way_delay_ms)
    r = R_DEFAULT - d - ie_e
    return EModelResult(inputs, ie_e, d, r, mos_from_r(r))


def one_way_delay_ms(transit_ms: float, jitter_ms: float) -> float:
    """Ta of an inbound leg: network transit, one frame of packetisation, and a 2 x jitter buffer."""
    return max(0.0, transit_ms) + FRAME_MS + 2.0 * max(0.0, jitter_ms)
