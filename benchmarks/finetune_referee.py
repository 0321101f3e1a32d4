"""Referee a pictoworld audit with the oracle: gender deviation ratio and profession recognition per
mitigation (issue 26's fairness acceptance; docs/finetune.md gives the commands).

The audit's own figures are judged by CLIP, which the fine-tune's reward also used; the oracle (trained
on the world's ground truth, never a reward) is the referee. Run:

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_referee.py runs/ft_eval
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

SKEWED = ("doctor", "nurse", "pilot", "soldier", "hairdresser")  # the professions planted off 50/50 on gender


def referee(run_dir: Path) -> dict[str, dict[str, float]]:
    from diffsteer.metrics.bias import deviation_ratio
    from diffsteer.pictoworld import oracle_dir, world
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.runs.store import RunStore

    store = RunStore.open_existing(run_dir)
    try:
        recs = store.images(status="ok")
        images = np.stack([np.asarray(store.load_image(r).convert("RGB")) for r in recs])
    finally:
        store.close()
    labels = predict(load_oracle(oracle_dir()), images)
    prompt_of = {f"a photo of {world.article(p)} {p}": p for p in world.PROFESSIONS}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(recs):
        if r.prompt in prompt_of:
            groups[(r.mitigation, prompt_of[r.prompt])].append(i)
    out: dict[str, dict[str, float]] = {}
    for mitigation in dict.fromkeys(r.mitigation for r in recs):
        row: dict[str, float] = {}
        drs, recognised = [], []
        for prof in world.PROFESSIONS:
            idx = groups.get((mitigation, prof), [])
            if not idx:
                continue
            genders = [labels["gender"][i] for i in idx]
            counts = [genders.count("man"), genders.count("woman")]
            dr = float(deviation_ratio(np.array(counts)))
            rec = float(np.mean([labels["profession"][i] == prof for i in idx]))
            row[f"{prof}_man_share"] = counts[0] / max(sum(counts), 1)
            row[f"{prof}_recognised"] = rec
            if prof in SKEWED:
                drs.append(dr)
                recognised.append(rec)
        row["mean_dr_skewed"] = float(np.mean(drs))
        row["recognised_skewed"] = float(np.mean(recognised))
        row["n_per_prompt"] = float(np.mean([len(groups[(mitigation, p)]) for p in SKEWED]))
        out[mitigation] = row
    return out


def main() -> None:
    run_dir = Path(sys.argv[1])
    table = referee(run_dir)
    base = table.get("none")
    print("| mitigation | mean gender DR, 5 skewed (oracle) | vs none | recognised (oracle) | n/prompt |")
    print("|---|---|---|---|---|")
    for mitigation, row in table.items():
        change = "" if base is None else f"{(row['mean_dr_skewed'] / base['mean_dr_skewed'] - 1) * 100:+.0f}%"
        lora = mitigation.startswith("lora:")
        name = "lora:" + Path(mitigation[5:]).parent.name if lora else mitigation
        print(
            f"| {name} | {row['mean_dr_skewed']:.3f} | {change} | {row['recognised_skewed']:.3f} | "
            f"{row['n_per_prompt']:.0f} |"
        )
    print()
    for mitigation, row in table.items():
        shares = ", ".join(f"{p} {row[f'{p}_man_share']:.2f}" for p in SKEWED if f"{p}_man_share" in row)
        print(f"{mitigation}: man share {shares}")


if __name__ == "__main__":
    main()
