"""The drift statistics, on full windows, in numpy.

Each feature becomes counts over shared bins: categories (missing values are a category of
their own), or for numbers their distinct values when there are few and pooled quantiles
otherwise. On those counts:

- numbers: the Wasserstein-1 distance between the two windows' distributions, in reference
  standard deviations (Evidently's "normed" Wasserstein);
- categories: the Jensen-Shannon distance, base 2, from 0 (same shares) to 1 (no category
  in common).

Significance and size are judged apart. A two-sample test gives the p-value that a
multiple-testing correction needs: Kolmogorov-Smirnov on numbers (asymptotic, so conservative on
tied values and on the bins' edges), the chi-square test of homogeneity on categories (categories
too rare for its approximation merged into one). The distance is the effect a person reads and
the floor applies to: a large window makes a trivial shift significant, never larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MAX_BINS = 256  # numeric quantile bins and categories kept apart (the rarest merge into one)
EDGE_SAMPLE = 20_000  # pooled values the quantile bins are drawn from
MISSING = "\x00missing"  # a category no real value spells
MIN_EXPECTED = 5  # expected count per category the chi-square approximation needs


@dataclass(frozen=True)
class Binned:
    """One feature of both windows as counts over shared, ordered bins."""

    reference: np.ndarray  # int64 counts per bin
    current: np.ndarray
    positions: np.ndarray | None  # numbers: each bin's value (ordered); None for categories
    scale: float  # numbers: the reference's standard deviation (the pooled one if it is 0); 1 for categories


def bin_numeric(reference: np.ndarray, current: np.ndarray, seed: int) -> Binned:
    """Non-missing values of both windows, binned on their pooled distinct values or quantiles."""
    from_reference, from_current = edge_sample(len(reference), len(current), seed)
    sample = np.concatenate([reference[from_reference], current[from_current]])
    low, high = min(reference.min(), current.min()), max(reference.max(), current.max())
    positions = bin_positions(sample, low, high)
    scale = float(np.std(reference))
    if scale == 0.0:
        scale = float(np.std(np.concatenate([reference, current])))
    return Binned(histogram(reference, positions), histogram(current, positions), positions, scale)


def edge_sample(reference_rows: int, current_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which values of each window the quantile bins are drawn from (positions, with replacement).

    Positions rather than values, so windows held in partitions draw the very same sample.
    """
    rng = np.random.default_rng(seed)
    take = min(EDGE_SAMPLE, reference_rows + current_rows)
    from_reference = round(take * reference_rows / (reference_rows + current_rows))
    return rng.choice(reference_rows, from_reference), rng.choice(current_rows, take - from_reference)


def bin_positions(sample: np.ndarray, low: float, high: float) -> np.ndarray:
    """Each bin's value: the sample's distinct values, or its quantiles when there are many, and the true extremes."""
    distinct = np.unique(sample)
    if len(distinct) > MAX_BINS:
        distinct = np.unique(np.quantile(sample, np.linspace(0, 1, MAX_BINS + 1)))
    # The true extremes, so values the sample missed are not folded into the nearest quantile.
    return np.unique(np.concatenate([[low], distinct, [high]]))


def histogram(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Counts per bin: each value at the largest position not above it; the last edge closes the last bin.

    Counts of parts of a window add up to the window's.
    """
    edges = np.append(positions, np.nextafter(positions[-1], np.inf))
    return np.histogram(values, bins=edges)[0].astype("int64")


def category_counts(column: pd.Series) -> pd.Series:
    """Rows per category as text (1, "1" and True are one category), missing values counted as ``MISSING``.

    Only the distinct values become text, which keeps a million-row column cheap.
    """
    codes, labels = pd.factorize(column, use_na_sentinel=True)
    counts = np.bincount(codes + 1, minlength=len(labels) + 1)
    return pd.Series(counts, index=[MISSING, *map(str, labels)]).groupby(level=0, sort=False).sum()


def bin_categories(reference: pd.Series, current: pd.Series) -> Binned:
    """Both windows' ``category_counts`` over their shared categories; beyond ``MAX_BINS`` the rarest merge."""
    table = pd.concat([reference.rename("r"), current.rename("c")], axis=1).fillna(0).astype("int64")
    table = table[(table["r"] + table["c"]) > 0]
    if len(table) > MAX_BINS:
        table = table.loc[(table["r"] + table["c"]).sort_values(ascending=False).index]
        table = pd.concat([table.iloc[: MAX_BINS - 1], table.iloc[MAX_BINS - 1:].sum().to_frame("other").T])
    return Binned(table["r"].to_numpy(), table["c"].to_numpy(), None, 1.0)


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum()


def wasserstein(binned: Binned) -> float:
    """Wasserstein-1 distance between the windows, in ``binned.scale`` units (0 when both are one constant)."""
    assert binned.positions is not None
    cdf_gap = np.abs(np.cumsum(_shares(binned.reference)) - np.cumsum(_shares(binned.current)))[:-1]
    distance = float(cdf_gap @ np.diff(binned.positions))
    return distance / binned.scale if binned.scale > 0 else 0.0


def jensen_shannon(binned: Binned) -> float:
    """Base-2 Jensen-Shannon distance between the windows' category shares."""
    p, q = _shares(binned.reference), _shares(binned.current)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    return math.sqrt(min(max(float(terms.sum()) / 2, 0.0), 1.0))


def ks_p_value(binned: Binned) -> float:
    """Two-sample Kolmogorov-Smirnov p-value from the binned distribution functions.

    Stephens' small-sample correction of the statistic keeps the asymptotic distribution's tail
    from being optimistic on a few hundred rows, where the Bonferroni-corrected level sits.
    """
    n, m = int(binned.reference.sum()), int(binned.current.sum())
    gap = float(np.abs(np.cumsum(_shares(binned.reference)) - np.cumsum(_shares(binned.current))).max())
    root = math.sqrt(n * m / (n + m))
    return float(stats.kstwobign.sf(gap * (root + 0.12 + 0.11 / root)))


def chi_square_p_value(binned: Binned) -> float:
    """Chi-square test of homogeneity of the two windows' category counts.

    Categories expected fewer than ``MIN_EXPECTED`` times in either window merge into one (and
    that one into the next rarest, if it is still too rare), as the approximation asks; a single
    category left is no evidence either way.
    """
    table = np.stack([binned.reference, binned.current]).astype("float64")
    table = table[:, np.argsort(-table.sum(axis=0), kind="stable")]
    least_share = table.sum(axis=1).min() / table.sum()
    rare = least_share * table.sum(axis=0) < MIN_EXPECTED  # a suffix: the columns are sorted by count
    kept, rest = table[:, ~rare], table[:, rare].sum(axis=1, keepdims=True)
    if rare.any():
        if least_share * rest.sum() >= MIN_EXPECTED or kept.shape[1] == 0:
            kept = np.hstack([kept, rest])
        else:
            kept[:, -1:] += rest
    if kept.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(kept, correction=False).pvalue)
