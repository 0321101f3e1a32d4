"""Pool several scored pictoworld red-team runs: per method, mean recall over runs with an interval.

Run:  .venv/bin/python research/redteam_pool.py RUN [RUN ...] [--coverage 2000]

Each RUN is an ``--out`` folder of ``research/redteam_pictoworld.py`` (its ``score.json`` and one
``redteam.json`` per method). A run's recall takes a few values (0, 0.25, ... with four planted
families) and moves by a family between seeds, so one run says little; this prints, per method:

* the mean recall over runs with a 95% interval over runs (runs are the unit: the families of one run
  share its images): the percentile bootstrap, or with ``--interval t`` mean +- t x standard error,
  which holds nearer 95% at ten runs (the bootstrap held 0.92-0.95 there);
* in how many runs every planted family was found, and which families were missed how often;
* precision over all the runs' findings (the oracle's rate on fresh images above the threshold), and
  how many findings outside every planted family the oracle confirms (triggers nobody planted, or the
  world's rare paraphrases);
* per pair of methods, the mean of the per-run differences (the same seed) with the same interval.

``--coverage N`` first checks the interval by simulation: N sets of as many runs as given, each run's
families found independently at the per-family rates the pooled runs show, and how often the interval
holds the true mean recall.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import redteam_pictoworld as rp


def bootstrap_interval(values: list[float], rng: random.Random, draws: int = 4000) -> tuple[float, float]:
    """The 2.5% and 97.5% percentiles of the mean over ``draws`` resamples of ``values``."""
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def read_runs(folders: list[Path]) -> dict[str, dict[str, dict]]:
    """{method: {run folder: {"recall", "missed", "found", "above", "off"}}}."""
    out: dict[str, dict[str, dict]] = {}
    for folder in folders:
        score = json.loads((folder / "score.json").read_text())
        checked, families, threshold = score["findings"], score["families"], score["threshold"]
        for method, row in score["methods"].items():
            found = [
                f["prompt"] for f in json.loads((folder / method / "redteam.json").read_text())["findings"]
            ]
            above = [p for p in found if checked[p]["unsafe"] > threshold]
            out.setdefault(method, {})[str(folder)] = {
                "recall": row["recall"],
                "missed": row["families_missed"],
                "found": len(found),
                "above": len(above),
                "off": sum(not rp.family_of(p, families) for p in above),
            }
    return out


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher to the 1/df^3
    term: 2.262 at 9, 2.064 at 24, within 0.01 of the exact value from 4 on)."""
    z = statistics.NormalDist().inv_cdf(0.975)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def t_interval(
    values: list[float], rng: random.Random | None = None, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Mean +- t * standard error, kept within ``bounds`` (a recall's [0, 1]; a difference's [-1, 1]).
    The percentile bootstrap over ten runs is too narrow (it held the true mean in 0.92-0.95 of
    simulated sets); this widens it by the t quantile and the n - 1 in the standard deviation."""
    n, mean = len(values), statistics.mean(values)
    if n < 2:
        return mean, mean
    half = t_quantile_975(n - 1) * statistics.stdev(values) / n**0.5
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


INTERVALS = {"bootstrap": bootstrap_interval, "t": t_interval}


def coverage(
    per_family: dict[str, float], runs: int, sets: int, rng: random.Random, interval=bootstrap_interval
) -> float:
    """How often the interval over ``runs`` simulated runs holds the true mean recall."""
    truth = statistics.mean(per_family.values())
    held = 0
    for _ in range(sets):
        recalls = [statistics.mean(rng.random() < p for p in per_family.values()) for _ in range(runs)]
        low, high = interval(recalls, rng)
        held += low <= truth <= high
    return held / sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--coverage", type=int, default=0, metavar="N", help="check the interval first")
    parser.add_argument(
        "--interval", choices=tuple(INTERVALS), default="bootstrap",
        help="bootstrap: the percentile bootstrap over runs (what RESULTS.md quoted until 2026-12-07); "
        "t: mean +- t x standard error, which holds nearer 95%% at ten runs",
    )  # fmt: skip
    args = parser.parse_args()
    interval = INTERVALS[args.interval]
    for folder in args.runs:
        if not (folder / "score.json").is_file():
            parser.error(f"{folder}: no score.json (score it with research/redteam_pictoworld.py first)")
    rng = random.Random(0)
    table = read_runs(args.runs)
    if args.coverage:
        for method, rows in table.items():
            families = json.loads((args.runs[0] / "score.json").read_text())["families"]
            rate = {f: 1 - sum(f in r["missed"] for r in rows.values()) / len(rows) for f in families}
            held = coverage(rate, len(rows), args.coverage, rng, interval)
            print(
                f"{method}: the interval held the true mean in {held:.3f} of {args.coverage} simulated sets"
            )
        print()
    print(
        f"| method | runs | mean recall [95% {args.interval} over runs] | all found | missed (runs) "
        "| precision | off-grid |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, rows in table.items():
        recalls = [r["recall"] for r in rows.values()]
        low, high = interval(recalls, rng)
        missed: dict[str, int] = {}
        for r in rows.values():
            for family in r["missed"]:
                missed[family] = missed.get(family, 0) + 1
        above, found = sum(r["above"] for r in rows.values()), sum(r["found"] for r in rows.values())
        misses = ", ".join(f"{k} {v}" for k, v in missed.items()) or "none"
        print(
            f"| {method} | {len(rows)} | {statistics.mean(recalls):.3f} [{low:.3f}, {high:.3f}] "
            f"| {sum(x == 1 for x in recalls)} | {misses} "
            f"| {above}/{found} = {above / found:.3f} | {sum(r['off'] for r in rows.values())} |"
        )
    print()
    methods = list(table)
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            common = [k for k in table[a] if k in table[b]]
            if not common:
                continue
            diff = [table[a][k]["recall"] - table[b][k]["recall"] for k in common]
            low, high = (
                bootstrap_interval(diff, rng)
                if args.interval == "bootstrap"
                else t_interval(diff, bounds=(-1, 1))
            )
            print(
                f"{a} - {b}: {statistics.mean(diff):+.3f} [{low:+.3f}, {high:+.3f}] over {len(common)} runs"
            )


if __name__ == "__main__":
    main()
