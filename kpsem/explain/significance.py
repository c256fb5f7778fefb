"""Is one model's gain over another real, or luck of the test set? Paired statistics on the same videos.

Two models evaluated on the same videos are paired: what matters is the videos on which they disagree.
This module holds the plain statistics (numbers and boolean arrays in, numbers out; numpy only):

* McNemar's exact test on the discordant pairs (``fixed``: KPSEM right and the baseline wrong;
  ``broken``: the reverse), two-sided, from the binomial tail computed exactly with integers;
* a percentile bootstrap interval for the paired difference in top-1, resampling videos with replacement;
* Wilson score intervals for one accuracy (per class: a few videos each, where the normal
  approximation gives bounds outside [0, 1]);
* the mean and standard deviation of several runs (seeds, or the three splits of HMDB51 / UCF101).

:func:`kpsem.explain.compare.paired_significance` applies them to two aligned predictions tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ALPHA",
    "Z95",
    "RUN_FIGURES",
    "mcnemar_exact",
    "wilson_interval",
    "bootstrap_difference",
    "format_p",
    "PairedSignificance",
    "RunsSummary",
    "summarise_runs",
]

ALPHA = 0.05  # significance level of every stated test
Z95 = 1.959963984540054  # standard normal quantile at 0.975: the two-sided 95% Wilson interval


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 P(X <= min(b, c)))`` with ``X ~ Bin(b + c, 1/2)``.

    Under the null hypothesis (both models equally accurate) each discordant video is equally likely to
    go either way. The tail is summed with exact integers (``C(n, k+1) = C(n, k) (n-k) / (k+1)``), so the
    p-value is exact for any number of videos; 1 when the models never disagree."""
    for name, value in (("fixed", fixed), ("broken", broken)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a count (an integer >= 0); got {value!r}")
    n, smaller = int(fixed) + int(broken), min(int(fixed), int(broken))
    if n == 0:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for k in range(smaller):
        term = term * (n - k) // (k + 1)  # C(n, k + 1), exact: C(n, k) (n - k) is divisible by k + 1
        tail += term
    return min(1.0, 2 * tail / 2**n)  # int / int: one correctly rounded division, no overflow


def wilson_interval(successes: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (95% with the default ``z``), always inside [0, 1].

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"a Wilson interval needs at least one trial; got n = {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, (int, np.integer)) or not 0 <= successes <= n:
        raise ValueError(f"successes must be an integer from 0 to n = {n}; got {successes!r}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The ends are exactly 0 and 1 when p is; clamp the rounding of the sum, never the interval.
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_difference(
    baseline_right: Sequence[bool] | np.ndarray,
    kpsem_right: Sequence[bool] | np.ndarray,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the paired difference in accuracy (KPSEM minus baseline).

    A resample draws as many videos as there are, with replacement, and both models are scored on the
    same draw. Its difference is (fixed drawn - broken drawn) / videos, so it depends only on how many
    fixed and broken videos the draw holds, and those counts are multinomial with the observed shares.
    Drawing the counts directly is therefore the same bootstrap, at a cost that does not grow with the
    number of videos. The interval is the (1-confidence)/2 and (1+confidence)/2 quantiles (numpy's
    linear interpolation) of ``resamples`` differences from ``numpy.random.default_rng(seed)``."""
    right_b = np.asarray(baseline_right, dtype=bool)
    right_k = np.asarray(kpsem_right, dtype=bool)
    if right_b.ndim != 1 or right_b.shape != right_k.shape or len(right_b) == 0:
        raise ValueError(f"need one right/wrong flag per video for each model, at least one video; got shapes "
                         f"{right_b.shape} and {right_k.shape}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer; got {resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    n = len(right_b)
    fixed, broken = int((right_k & ~right_b).sum()), int((right_b & ~right_k).sum())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [fixed / n, broken / n, (n - fixed - broken) / n], size=int(resamples))  # (R, 3)
    differences = (counts[:, 0] - counts[:, 1]) / n  # (R,)
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low) + 0.0, float(high) + 0.0  # + 0.0 turns a -0.0 into 0.0


def format_p(p: float, *, alpha: float = ALPHA) -> str:
    """A p-value with four significant digits, or more where rounding would carry it across ``alpha``
    (0.04996 must not read as 0.05 beside "significant")."""
    for digits in range(4, 17):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return repr(p)


@dataclass(frozen=True)
class PairedSignificance:
    """Two models on the same items (videos, or clips at clip level): accuracies, test and interval."""

    level: str  # "video" or "clip": what one item is
    baseline_id: str  # model_id of the baseline
    kpsem_id: str  # model_id of the KPSEM model
    items: int  # items compared
    top1_baseline: float  # top-1 accuracy over the items
    top1_kpsem: float
    mean_class_baseline: float  # mean over the classes present of each class's top-1
    mean_class_kpsem: float
    fixed: int  # KPSEM right, baseline wrong
    broken: int  # baseline right, KPSEM wrong
    p_value: float  # McNemar exact, two-sided
    ci_low: float  # bootstrap percentile interval of top1_kpsem - top1_baseline
    ci_high: float
    resamples: int  # bootstrap resamples behind the interval
    seed: int  # their random seed
    confidence: float = 0.95  # of the interval
    alpha: float = ALPHA  # level of the test

    @property
    def difference(self) -> float:
        """Top-1 of KPSEM minus top-1 of the baseline (a fraction; x100 for points)."""
        return self.top1_kpsem - self.top1_baseline

    @property
    def mean_class_difference(self) -> float:
        return self.mean_class_kpsem - self.mean_class_baseline

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def sentence(self) -> str:
        """The verdict in plain words, e.g. 'not significant at 5%: McNemar exact p = 0.0625 (5 fixed,
        0 broken), 64 videos'."""
        verdict = "significant" if self.significant else "not significant"
        unit = self.level + ("" if self.items == 1 else "s")
        return (f"{verdict} at {self.alpha:.0%}: McNemar exact p = {format_p(self.p_value, alpha=self.alpha)} "
                f"({self.fixed} fixed, {self.broken} broken), {self.items} {unit}")

    @property
    def caveats(self) -> list[str]:
        """What the figures above cannot say, in plain words (empty when nothing needs saying)."""
        notes = []
        if self.level == "clip":
            notes.append("clips of one video are not independent, so a clip-level test overstates the evidence; "
                         "read the video level")
        if (self.fixed == 0) != (self.broken == 0):
            side = "below" if self.broken == 0 else "above"
            notes.append(f"all {self.fixed + self.broken} disagreements go one way, so no resample can reverse "
                         f"the difference and the bootstrap interval cannot reach {side} zero: the verdict is "
                         "the exact test's")
        return notes

    @property
    def interval_text(self) -> str:
        """The paired difference and its bootstrap interval, in accuracy points."""
        return (f"KPSEM minus baseline: {self.difference * 100:+.1f} points top-1, "
                f"{self.confidence:.0%} bootstrap CI {self.ci_low * 100:+.1f} to {self.ci_high * 100:+.1f} "
                f"({self.resamples} resamples of the {self.items} {self.level}s, seed {self.seed})")

    def to_dict(self) -> dict[str, object]:
        """Every field, the derived figures and the sentence, as JSON-able values (README: significance.json)."""
        out: dict[str, object] = asdict(self)
        out.update(top1_difference=self.difference, mean_class_difference=self.mean_class_difference,
                   mcnemar_p=out.pop("p_value"), significant=self.significant, sentence=self.sentence,
                   interval=self.interval_text, caveats=self.caveats)
        return out


# Figures summarised across runs, each a PairedSignificance attribute.
RUN_FIGURES = ("top1_baseline", "top1_kpsem", "difference", "mean_class_baseline", "mean_class_kpsem",
               "mean_class_difference")


@dataclass(frozen=True)
class RunsSummary:
    """Mean and standard deviation across runs of each figure in :data:`RUN_FIGURES`."""

    runs: int  # number of paired runs
    mean: dict[str, float]  # figure -> mean over runs
    std: dict[str, float | None]  # figure -> sample standard deviation (n - 1); None for a single run
    significant_runs: int  # runs whose McNemar p is below alpha

    def describe(self, figure: str) -> str:
        """'76.6% ± 1.2' (accuracies) or '+7.8 ± 1.2 points' (differences); no ± for a single run."""
        mean, std = self.mean[figure] * 100, self.std[figure]
        spread = "" if std is None else f" ± {std * 100:.1f}"
        if "difference" in figure:
            return f"{mean:+.1f}{spread} points"
        return f"{mean:.1f}%{spread}"

    def to_dict(self) -> dict[str, object]:
        names = {"difference": "top1_difference"}  # the same key as in each run's record
        return {"runs": self.runs, "significant_runs": self.significant_runs,
                **{names.get(f, f): {"mean": self.mean[f], "std": self.std[f]} for f in RUN_FIGURES}}


def summarise_runs(runs: Sequence[PairedSignificance]) -> RunsSummary:
    """Mean and sample standard deviation (n - 1 in the denominator, as for a few seeds or splits)."""
    if not runs:
        raise ValueError("no runs to summarise")
    mean: dict[str, float] = {}
    std: dict[str, float | None] = {}
    for figure in RUN_FIGURES:
        values = np.array([getattr(run, figure) for run in runs], dtype=np.float64)
        mean[figure] = float(values.mean())
        std[figure] = float(values.std(ddof=1)) if len(values) > 1 else None
    return RunsSummary(runs=len(runs), mean=mean, std=std, significant_runs=sum(run.significant for run in runs))
