"""The statistics of A/B experiments: a test that survives being looked at on every analysis.

Pure numbers (numpy), no API types: `lmo.decide.experiment` applies it to a spec.

The test: a mixture sequential probability ratio test (mSPRT) on the difference of two
means, in the normal approximation, as in Johari, Koomen, Pekelis & Walsh, "Peeking at A/B
tests" (KDD 2017) and "Always valid inference" (Operations Research 2022); the interval is
the matching confidence sequence (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, normal mixture).

* lift = candidate rate - baseline rate (absolute; `relative` = lift / baseline rate).
* V = p_b(1-p_b)/n_b + p_c(1-p_c)/n_c, the variance of the lift (each rate shrunk as
  (s + 1/2)/(n + 1) inside the variance only, so an arm with no failures yet does not get
  zero variance).
* The mixture's variance tau^2 is fixed in advance relative to the planned sample size
  `minSamples`: tau^2 / V = r* (2/m) / (1/n_b + 1/n_c), where r* minimises the interval's
  width at n_b = n_c = m. The sharpest interval is therefore around minSamples per arm,
  and the choice depends on nothing observed (sigma^2 cancels), as the mSPRT requires.
* Likelihood ratio of "lift = 0": L = sqrt(1/(1+rho)) exp(z^2/2 * rho/(1+rho)) with
  z^2 = lift^2/V and rho = tau^2/V. The always-valid p-value is the running minimum of
  min(1, 1/L) over the looks; the interval is
  lift +- sqrt(V (1+rho)/rho (2 ln(1/alpha) + ln(1+rho))), alpha = 1 - confidence.
  By Ville's inequality the chance that 1/L ever drops below alpha under equal rates is at
  most alpha, however many looks are taken: peeking is free.
* Scores in [0, 1] (`"score": 0.7` feedback) use the same test with successes = the sum
  of scores: a [0, 1] variable with mean mu has variance at most mu(1-mu), so the Bernoulli
  variance is a conservative bound for them.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=64)
def mixing_ratio(alpha: float) -> float:
    """r* = tau^2 / V at the planned sample size: the ratio that minimises the interval's
    half-width (1 + 1/r)(2 ln(1/alpha) + ln(1 + r)) (a fixed grid, so it is deterministic)."""
    r = np.logspace(-2, 4, 6001)
    width = (1 + 1 / r) * (2 * math.log(1 / alpha) + np.log1p(r))
    return float(r[int(np.argmin(width))])


@dataclass(frozen=True)
class Test:
    """One look of the sequential test (each field a float, or an array of looks)."""

    lift: Any  # candidate rate - baseline rate
    low: Any  # always-valid interval of the lift
    high: Any
    p_value: Any  # min(1, 1/likelihood ratio) at this look (fold with a running minimum)
    ready: Any  # both arms have minSamples: a decision may be taken


def sequential_test(
    successes_b: Any, samples_b: Any, successes_c: Any, samples_c: Any,
    min_samples: int, confidence: float,
) -> Test:
    """The mixture SPRT of "candidate rate = baseline rate" at one look (see the module
    docstring). Works on numbers and, element-wise, on numpy arrays of looks."""
    sb, nb = np.asarray(successes_b, float), np.asarray(samples_b, float)
    sc, nc = np.asarray(successes_c, float), np.asarray(samples_c, float)
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        pb = np.where(nb > 0, sb / np.maximum(nb, 1), 0.0)
        pc = np.where(nc > 0, sc / np.maximum(nc, 1), 0.0)
        lift = pc - pb
        qb, qc = (sb + 0.5) / (nb + 1), (sc + 0.5) / (nc + 1)
        inv = 1 / np.maximum(nb, 1) + 1 / np.maximum(nc, 1)
        var = qb * (1 - qb) / np.maximum(nb, 1) + qc * (1 - qc) / np.maximum(nc, 1)
        rho = mixing_ratio(alpha) * (2.0 / min_samples) / inv
        z2 = lift * lift / var
        log_lr = 0.5 * z2 * rho / (1 + rho) - 0.5 * np.log1p(rho)
        p = np.minimum(1.0, np.exp(-log_lr))
        half = np.sqrt(var * (1 + rho) / rho * (2 * math.log(1 / alpha) + np.log1p(rho)))
    empty = (nb <= 0) | (nc <= 0)
    p = np.where(empty, 1.0, p)
    ready = (nb >= min_samples) & (nc >= min_samples)
    out = [lift, lift - half, lift + half, p, ready]
    if np.ndim(lift) == 0:
        out = [bool(x) if isinstance(x, np.bool_) else float(x) for x in out]
        out[4] = bool(out[4])
    return Test(*out)
