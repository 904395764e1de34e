"""The statistics of the analysis: 95% intervals over seeds, and how the report
writes them."""

import math
import os

import numpy as np

from kzero.records import read_rows

__all__ = ["confidence_interval", "format_interval", "interval_of", "mean_of_finite",
           "run_csv"]

# Student t quantile t(0.975, df) for df = 1..30; beyond, the normal 1.96 is
# within 2% of the truth.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def confidence_interval(values):
    """Mean and half-width of the 95% Student-t interval of `values` (the
    half-width is NaN for fewer than two values)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan
    df = len(values) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96
    return mean, float(t * values.std(ddof=1) / math.sqrt(len(values)))


def format_interval(mean, half):
    """`mean ± half` to 4 decimals, or the mean alone where there is no interval."""
    return f"{mean:.4f} ± {half:.4f}" if math.isfinite(half) else f"{mean:.4f}"


def interval_of(values):
    """`format_interval` of the 95% interval of `values`; "-" for none."""
    if not values:
        return "-"
    return format_interval(*confidence_interval(values))


def mean_of_finite(values):
    """The mean of the finite values among `values` (None skipped), or NaN."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def run_csv(run, name):
    """The rows of a run's CSV record `name` (`gradients.csv`, ...), typed; none
    where the run did not record it."""
    path = os.path.join(run.workdir, name)
    return read_rows(path) if os.path.exists(path) else []
