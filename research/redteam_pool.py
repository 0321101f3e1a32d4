"""Pool several scored pictoworld red-team runs: per method, mean recall over runs with an interval.

Run:  .venv/bin/python research/redteam_pool.py RUN [RUN ...] [--coverage 2000]

Each RUN is an ``--out`` folder of ``research/redteam_pictoworld.py`` (its ``score.json`` and one
``redteam.json`` per method). A run's recall takes a few values (0, 0.25, ... with four planted
families) and moves by a family between seeds, so one run says little; this prints, per method:

* the mean recall over runs with a 95% percentile bootstrap interval over runs (runs are the unit:
  the families of one run share its images);
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


def coverage(per_family: dict[str, float], runs: int, sets: int, rng: random.Random) -> float:
    """How often the interval over ``runs`` simulated runs holds the true mean recall."""
    truth = statistics.mean(per_family.values())
    held = 0
    for _ in range(sets):
        recalls = [statistics.mean(rng.random() < p for p in per_family.values()) for _ in range(runs)]
        low, high = bootstrap_interval(recalls, rng, draws=1000)
        held += low <= truth <= high
    return held / sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--coverage", type=int, default=0, metavar="N", help="check the interval first")
    args = parser.parse_args()
    for folder in args.runs:
        if not (folder / "score.json").is_file():
            parser.error(f"{folder}: no score.json (score it with research/redteam_pictoworld.py first)")
    rng = random.Random(0)
    table = read_runs(args.runs)
    if args.coverage:
        for method, rows in table.items():
            families = json.loads((args.runs[0] / "score.json").read_text())["families"]
            rate = {f: 1 - sum(f in r["missed"] for r in rows.values()) / len(rows) for f in families}
            held = coverage(rate, len(rows), args.coverage, rng)
            print(
                f"{method}: the interval held the true mean in {held:.3f} of {args.coverage} simulated sets"
            )
        print()
    print(
        "| method | runs | mean recall [95% bootstrap over runs] | all found | missed (runs) | precision "
        "| off-grid |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, rows in table.items():
        recalls = [r["recall"] for r in rows.values()]
        low, high = bootstrap_interval(recalls, rng)
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
            low, high = bootstrap_interval(diff, rng)
            print(
                f"{a} - {b}: {statistics.mean(diff):+.3f} [{low:+.3f}, {high:+.3f}] over {len(common)} runs"
            )


if __name__ == "__main__":
    main()
