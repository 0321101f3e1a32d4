"""Simulated audits with known true shares: how often do the audit's intervals contain the truth?

The evidence behind :mod:`diffsteer.metrics.intervals` (benchmarks/coverage.py prints the grid, the tests
run a small seeded version). A simulated audit has P prompts and S seeds; prompt p's image on seed s is
labelled by cutting a latent normal at the quantiles of the true shares, and with ``correlation`` the
latents of one seed share a common part (its square is the latent correlation between two prompts), as
image k of every prompt shares its starting noise in a real audit. 0.9 gives balanced prompts the same
label on a seed 85% of the time, what pictoworld's skin tone shows (84-93%).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from diffsteer.metrics.bootstrap import resample_by_seed, seed_counts
from diffsteer.metrics.difference import mean_difference_interval
from diffsteer.metrics.intervals import (
    debiased_deviation_ratio,
    deviation_ratio_interval,
    mean_deviation_ratio_interval,
)
from diffsteer.metrics.pooled_rate import design_effect, pooled_rate, rate_reduction
from diffsteer.metrics.proportion import clopper_pearson

__all__ = [
    "CellResult",
    "simulate_cell",
    "simulate_labels",
    "simulate_paired_difference",
    "simulate_rate_reduction",
]

SEED_CORRELATION = 0.9
_AUDITS_PER_CHUNK = 100


def simulate_labels(
    rng: np.random.Generator, shares: np.ndarray, n_audits: int, n_images: int, correlation: float
) -> np.ndarray:
    """Labels ``(n_audits, P, S)`` (class indices) for true shares ``(P, C)``."""
    shares = np.asarray(shares, dtype=np.float64)
    n_prompts = shares.shape[0]
    cuts = np.array(
        [[NormalDist().inv_cdf(min(max(c, 1e-12), 1 - 1e-12)) for c in np.cumsum(row)[:-1]] for row in shares]
    )  # (P, C-1)
    common = rng.standard_normal((n_audits, 1, n_images))
    own = rng.standard_normal((n_audits, n_prompts, n_images))
    latent = np.sqrt(correlation) * common + np.sqrt(1.0 - correlation) * own
    return (latent[..., None] > cuts[None, :, None, :]).sum(axis=-1)


def _true_dr(shares: np.ndarray) -> np.ndarray:
    n_classes = shares.shape[-1]
    return np.abs(shares - 1.0 / n_classes).max(axis=-1) * n_classes / (n_classes - 1)


@dataclass
class CellResult:
    """Coverage and mean width of the new and of the old (plug-in, percentile) 95% intervals."""

    classes: int
    shares: tuple[float, ...] | tuple[tuple[float, ...], ...]  # one row for all prompts, or one per prompt
    prompts: int
    images: int
    correlated: bool
    audits: int
    true_mean_dr: float
    coverage: float  # mean DR over prompts (the aggregate row)
    below: float  # share of audits whose mean-DR interval lies wholly below the truth
    above: float  # ... wholly above it (an equal-tailed interval misses about 2.5% each way)
    width: float
    point_inside: float  # share of audits whose estimate lies inside its interval (prompts and mean)
    mean_estimate: float
    prompt_coverage: float
    prompt_width: float
    old_coverage: float
    old_width: float
    old_mean_estimate: float
    # width of an interval with exactly 95% coverage, known only to an oracle: the 2.5%-97.5% range of
    # the estimate over the simulated audits (an interval estimate +- that spread, shifted by its bias)
    oracle_width: float

    def to_dict(self) -> dict:
        return asdict(self)


def _old_interval(rng: np.random.Generator, counts: np.ndarray, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """The interval before issue 22: percentile bootstrap of the mean plug-in, images redrawn per prompt."""
    n = counts.sum(axis=-1)
    redraws = rng.multinomial(n, counts / n[..., None], size=(n_boot, *n.shape))
    values = _plugin_dr(redraws).mean(axis=-1)
    low, high = np.quantile(values, [0.025, 0.975], axis=0)
    return low, high


def _plugin_dr(counts: np.ndarray) -> np.ndarray:
    """The plain plug-in DR of counts (..., C)."""
    n_classes = counts.shape[-1]
    total = counts.sum(axis=-1)
    return np.abs(n_classes * counts - total[..., None]).max(axis=-1) / (total * (n_classes - 1))


def simulate_cell(
    shares: tuple[float, ...] | tuple[tuple[float, ...], ...],
    n_prompts: int,
    n_images: int,
    correlated: bool,
    n_audits: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
) -> CellResult:
    """Run ``n_audits`` simulated audits of P prompts; score the intervals.

    ``shares`` is one row of class shares that every prompt has, or a table of one row per prompt
    (P rows): an audit whose prompts differ, e.g. some skewed and some balanced as on pictoworld.
    """
    rng = np.random.default_rng(seed)
    table = np.asarray(shares, dtype=np.float64)
    if table.ndim == 2 and table.shape[0] != n_prompts:
        raise ValueError(f"shares has {table.shape[0]} rows for {n_prompts} prompts")
    true = table if table.ndim == 2 else np.tile(table, (n_prompts, 1))
    n_classes = true.shape[-1]
    truth_prompt = _true_dr(true)
    truth = float(truth_prompt.mean())
    hits = below = above = width = inside = estimate = 0.0
    p_hits = p_width = old_hits = old_width = old_estimate = 0.0
    points = []
    done = 0
    while done < n_audits:
        size = min(_AUDITS_PER_CHUNK, n_audits - done)
        labels = simulate_labels(rng, true, size, n_images, SEED_CORRELATION if correlated else 0.0)
        counts = seed_counts(labels, n_classes)  # (A, P, C)
        replicates = resample_by_seed(labels, n_classes, n_boot, seed=int(rng.integers(2**31)))
        point, low, high = mean_deviation_ratio_interval(counts, replicates)
        hits += ((low <= truth + 1e-12) & (truth <= high + 1e-12)).sum()
        below += (high < truth - 1e-12).sum()
        above += (low > truth + 1e-12).sum()
        width += (high - low).sum()
        estimate += point.sum()
        points.append(point)
        p_low, p_high = deviation_ratio_interval(counts)
        p_point = debiased_deviation_ratio(counts)
        inside += (
            ((low <= point) & (point <= high)) & ((p_low <= p_point) & (p_point <= p_high)).all(axis=-1)
        ).sum()
        p_hits += ((p_low <= truth_prompt + 1e-12) & (truth_prompt <= p_high + 1e-12)).mean(axis=-1).sum()
        p_width += (p_high - p_low).mean(axis=-1).sum()
        o_low, o_high = _old_interval(rng, counts, n_boot)
        old_hits += ((o_low <= truth) & (truth <= o_high)).sum()
        old_width += (o_high - o_low).sum()
        old_estimate += _plugin_dr(counts).mean(axis=-1).sum()
        done += size
    return CellResult(
        classes=n_classes,
        shares=(
            tuple(tuple(float(x) for x in row) for row in table)
            if table.ndim == 2
            else tuple(float(x) for x in table)
        ),
        prompts=n_prompts,
        images=n_images,
        correlated=correlated,
        audits=n_audits,
        true_mean_dr=truth,
        coverage=hits / n_audits,
        below=below / n_audits,
        above=above / n_audits,
        width=width / n_audits,
        point_inside=inside / n_audits,
        mean_estimate=estimate / n_audits,
        prompt_coverage=p_hits / n_audits,
        prompt_width=p_width / n_audits,
        old_coverage=old_hits / n_audits,
        old_width=old_width / n_audits,
        old_mean_estimate=old_estimate / n_audits,
        oracle_width=float(np.subtract(*np.quantile(np.concatenate(points), [0.975, 0.025]))),
    )


def simulate_paired_difference(
    shares_a: tuple[float, ...],
    shares_b: tuple[float, ...],
    n_prompts: int,
    n_images: int,
    n_audits: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Two runs on the same seeds (correlated as in a real audit: a seed's latent is shared by both runs
    and every prompt); coverage and width of the paired and of the unpaired interval of B - A."""
    rng = np.random.default_rng(seed)
    a = np.tile(np.asarray(shares_a, dtype=np.float64), (n_prompts, 1))
    b = np.tile(np.asarray(shares_b, dtype=np.float64), (n_prompts, 1))
    n_classes = a.shape[-1]
    truth = float(_true_dr(b).mean() - _true_dr(a).mean())
    result = {"paired": [0.0, 0.0], "unpaired": [0.0, 0.0]}
    done = 0
    while done < n_audits:
        size = min(_AUDITS_PER_CHUNK, n_audits - done)
        # one latent per seed for both runs: mitigation B of seed k starts from the same noise as A's
        labels = simulate_labels(rng, np.concatenate([a, b]), size, n_images, SEED_CORRELATION)
        labels = labels.reshape(size, 2, n_prompts, n_images)
        counts = seed_counts(labels, n_classes)  # (A, 2, P, C)
        paired = resample_by_seed(labels, n_classes, n_boot, seed=int(rng.integers(2**31)))
        run_a = resample_by_seed(labels[:, 0], n_classes, n_boot, seed=int(rng.integers(2**31)))
        run_b = resample_by_seed(labels[:, 1], n_classes, n_boot, seed=int(rng.integers(2**31)))
        unpaired = np.stack([run_a, run_b], axis=-3)
        for name, reps in (("paired", paired), ("unpaired", unpaired)):
            _, low, high = mean_difference_interval(
                counts[:, 0], counts[:, 1], reps[..., 0, :, :], reps[..., 1, :, :]
            )
            result[name][0] += ((low <= truth + 1e-12) & (truth <= high + 1e-12)).sum()
            result[name][1] += (high - low).sum()
        done += size
    return {
        "shares_a": shares_a,
        "shares_b": shares_b,
        "prompts": n_prompts,
        "images": n_images,
        "audits": n_audits,
        "true_difference": truth,
        **{f"{k}_coverage": v[0] / n_audits for k, v in result.items()},
        **{f"{k}_width": v[1] / n_audits for k, v in result.items()},
    }


def _inside(interval: list[float] | None, truth: float) -> bool:
    return interval is not None and interval[0] - 1e-12 <= truth <= interval[1] + 1e-12


def simulate_rate_reduction(
    baseline_rates: tuple[float, ...],
    mitigated_rates: tuple[float, ...],
    n_images: int,
    correlation: float = SEED_CORRELATION,
    n_audits: int = 1000,
    draws: int = 5000,
    seed: int = 0,
) -> dict:
    """Audits of P prompts under a baseline and a mitigation on the same seeds, with known unsafe rates
    per prompt: coverage and width of the pooled rate's interval (each arm; and of the plain
    Clopper-Pearson interval that counts every image as independent) and of the reduction's interval
    (:mod:`diffsteer.metrics.pooled_rate`). An audit whose baseline drew no unsafe image has no
    reduction; it counts as a miss (``no_estimate`` says how often)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(baseline_rates, dtype=np.float64)
    mitigated = np.asarray(mitigated_rates, dtype=np.float64)
    if base.shape != mitigated.shape or base.ndim != 1:
        raise ValueError("baseline_rates and mitigated_rates need one rate per prompt each")
    n_prompts = base.size
    true_rate = {"baseline": float(base.mean()), "mitigated": float(mitigated.mean())}
    truth = 1.0 - true_rate["mitigated"] / true_rate["baseline"]
    # class 0 is unsafe; both arms of a seed share its common latent, as a mitigation starts from the
    # baseline's noise
    shares = np.stack([np.concatenate([base, mitigated]), 1 - np.concatenate([base, mitigated])], axis=-1)
    labels = simulate_labels(rng, shares, n_audits, n_images, correlation) == 0
    counted = np.ones((n_prompts, n_images))
    tally = {
        k: 0.0 for k in ("rate_hits", "rate_width", "plain_hits", "plain_width", "hits", "width", "none")
    }
    below = above = 0
    for audit in labels.astype(np.float64):
        arms = {"baseline": audit[:n_prompts], "mitigated": audit[n_prompts:]}
        shared = max(design_effect(hits, counted) for hits in arms.values())
        for name, hits in arms.items():
            rate = pooled_rate(hits, counted, at_least=shared)
            plain = clopper_pearson(int(hits.sum()), hits.size)
            tally["rate_hits"] += _inside(rate["ci"], true_rate[name]) / 2
            tally["rate_width"] += (rate["ci"][1] - rate["ci"][0]) / 2
            tally["plain_hits"] += _inside(list(plain), true_rate[name]) / 2
            tally["plain_width"] += (plain[1] - plain[0]) / 2
        change = rate_reduction(
            (arms["baseline"], counted),
            (arms["mitigated"], counted),
            seed=int(rng.integers(2**31)),
            draws=draws,
        )
        if change["ci"] is None:
            tally["none"] += 1
            continue
        tally["hits"] += _inside(change["ci"], truth)
        tally["width"] += change["ci"][1] - change["ci"][0]
        below += change["ci"][1] < truth - 1e-12
        above += change["ci"][0] > truth + 1e-12
    made = max(n_audits - tally["none"], 1)
    return {
        "prompts": n_prompts,
        "images": n_images,
        "correlation": correlation,
        "audits": n_audits,
        "true_rates": true_rate,
        "true_reduction": truth,
        "rate_coverage": tally["rate_hits"] / n_audits,
        "rate_width": tally["rate_width"] / n_audits,
        "plain_rate_coverage": tally["plain_hits"] / n_audits,
        "plain_rate_width": tally["plain_width"] / n_audits,
        "reduction_coverage": tally["hits"] / n_audits,
        "reduction_below": below / n_audits,
        "reduction_above": above / n_audits,
        "reduction_width": tally["width"] / made,
        "no_estimate": tally["none"] / n_audits,
    }
