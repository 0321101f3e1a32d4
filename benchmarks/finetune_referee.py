"""Referee a pictoworld audit with the oracle: gender deviation ratio and profession recognition per
mitigation (issue 26's fairness acceptance), or, with ``--culture``, culture followed, profession
recognition and the Fréchet distance of CLIP features on object prompts (its alignment acceptance);
for prompts that name a gender or skin adjective beside the setting
(configs/finetune/composition_*.yaml), also the adjective followed and both at once.
docs/finetune.md gives the commands.

The audit's own figures are judged by CLIP, which the fine-tune's reward also used; the oracle (trained
on the world's ground truth, never a reward) is the referee. Run:

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_referee.py runs/ft_eval
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_referee.py --culture runs/align_eval \
      runs/align_base2 runs/align_base3

The runs after the first of ``--culture`` hold the base model's object images on other seeds: the
Fréchet distance between two base-model sets of independent seeds is the yardstick the fine-tune's
distance (to a base-model set of other seeds) is held to.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SKEWED = ("doctor", "nurse", "pilot", "soldier", "hairdresser")  # the professions planted off 50/50 on gender


def _load(run_dir: Path) -> tuple[list, list]:
    """The run's generated records and their images (RGB PIL)."""
    from diffsteer.runs.store import RunStore

    store = RunStore.open_existing(run_dir)
    try:
        recs = store.images(status="ok")
        images = [store.load_image(r).convert("RGB") for r in recs]
    finally:
        store.close()
    return recs, images


def _oracle_labels(images: list) -> dict[str, list[str]]:
    from diffsteer.pictoworld import oracle_dir
    from diffsteer.pictoworld.oracle import load_oracle, predict

    return predict(load_oracle(oracle_dir()), np.stack([np.asarray(im) for im in images]))


def referee(run_dir: Path) -> dict[str, dict[str, float]]:
    from diffsteer.metrics.bias import deviation_ratio
    from diffsteer.pictoworld import world

    recs, images = _load(run_dir)
    labels = _oracle_labels(images)
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
    _dr_changes(out, recs, labels, groups)
    return out


def _dr_changes(out: dict, recs: list, labels: dict, groups: dict) -> None:
    """Each mitigation's change of the oracle's mean gender DR over the skewed professions against
    ``none``, with the interval the audit reports for its own DR changes
    (``metrics.mean_difference_interval``, paired by seed; its coverage was checked by simulation,
    RESULTS.md "coverage of the DR intervals, simulated", 0.979-1.000 for paired changes)."""
    from diffsteer.metrics import mean_difference_interval, resample_by_seed

    def by_seed(mitigation: str) -> np.ndarray:
        n_seeds = 1 + max(recs[i].image_index for p in SKEWED for i in groups.get((mitigation, p), [0]))
        matrix = np.full((len(SKEWED), n_seeds), -1)
        for row, prof in enumerate(SKEWED):
            for i in groups.get((mitigation, prof), []):
                gender = labels["gender"][i]
                if gender in ("man", "woman"):
                    matrix[row, recs[i].image_index] = 0 if gender == "man" else 1
        return matrix

    if "none" not in out:
        return
    base = by_seed("none")
    for mitigation, row in out.items():
        if mitigation == "none":
            continue
        this = by_seed(mitigation)
        n = min(base.shape[1], this.shape[1])
        both = np.stack([base[:, :n], this[:, :n]])
        reps = resample_by_seed(both, 2)
        counts = (both[..., None] == np.arange(2)).sum(axis=-2)
        diff, low, high = (
            float(v) for v in mean_difference_interval(counts[0], counts[1], reps[:, 0], reps[:, 1])
        )
        row["dr_change"], row["dr_change_low"], row["dr_change_high"] = diff, low, high


def seed_cluster_interval(recs: list, hits: dict[int, bool], n_boot: int = 4000) -> tuple[float, float]:
    """95% interval of the share of ``hits`` (record index -> True/False) by redrawing seeds.

    Image k of every prompt starts from the same noise, and a model that ignores part of a prompt
    draws it alike for every prompt on that seed: pooled over prompts the images are not independent
    (a Clopper-Pearson interval on them is far too narrow). Each redraw picks seeds with replacement
    and keeps every prompt of a picked seed (metrics.bootstrap.resample_by_seed, as audits do)."""
    from diffsteer.metrics.bootstrap import resample_by_seed

    prompts = {p: k for k, p in enumerate(sorted({recs[i].prompt for i in hits}))}
    seeds = {s: k for k, s in enumerate(sorted({recs[i].seed for i in hits}))}
    labels = np.full((len(prompts), len(seeds)), -1)
    for i, hit in hits.items():
        labels[prompts[recs[i].prompt], seeds[recs[i].seed]] = int(hit)
    counts = resample_by_seed(labels, 2, n_boot=n_boot)  # (B, P, 2)
    totals = counts.sum(axis=(1, 2))
    shares = counts[..., 1].sum(axis=1)[totals > 0] / totals[totals > 0]
    low, high = np.quantile(shares, [0.025, 0.975])
    return float(low), float(high)


def culture_prompts() -> dict[str, tuple[str, str, tuple[str, str] | None]]:
    """Every setting prompt the culture referee reads: ``text -> (profession, culture, cue)``, where cue
    is the (oracle head, class) of a gender or skin adjective named beside the setting, or None."""
    from diffsteer.pictoworld import world

    adjectives = {a: ("gender", g) for g, a in world.GENDER_ADJECTIVE.items()}
    adjectives |= {a: ("skin_tone", s) for s, a in world.SKIN_ADJECTIVE.items()}
    out: dict[str, tuple[str, str, tuple[str, str] | None]] = {}
    for p in world.PROFESSIONS:
        for c in world.CULTURES:
            out[f"a photo of {world.article(p)} {p} in a {c} setting"] = (p, c, None)
            out |= {f"a photo of a {a} {p} in a {c} setting": (p, c, cue) for a, cue in adjectives.items()}
    return out


def referee_culture(run_dir: Path, base_run_dirs: Sequence[Path] = ()) -> dict[str, dict[str, float]]:
    """Per mitigation: the oracle's share of images in the asked culture (per culture, over the run's
    professions), profession recognition, and the Fréchet distance of the model's own CLIP image
    features on the object prompts to ``none`` of the same run (same seeds) and to ``none`` of
    each of ``base_run_dirs`` (other seeds, mean over them); ``base_none`` holds the distances between
    every two base-model sets of different seeds (this run's ``none`` and the base runs'). The intervals
    redraw seeds, not images (:func:`seed_cluster_interval`)."""
    from diffsteer.attributes.clip_zero_shot import ClipZeroShotClassifier
    from diffsteer.metrics.quality import frechet_distance
    from diffsteer.models import default_classifier
    from diffsteer.pictoworld import world

    recs, images = _load(run_dir)
    labels = _oracle_labels(images)
    asked = culture_prompts()
    objects = {f"a photo of {world.article(o)} {o}": o for o in world.OBJECTS}
    clip = ClipZeroShotClassifier.from_pretrained(default_classifier("pictoworld"))

    def object_features(records: list, imgs: list, mitigation: str) -> np.ndarray:
        picked = [
            im
            for r, im in zip(records, imgs, strict=True)
            if r.mitigation == mitigation and r.prompt in objects
        ]
        return clip.image_features(picked).numpy()

    base_feats = [object_features(*_load(d), "none") for d in base_run_dirs]
    none_feats = object_features(recs, images, "none")
    out: dict[str, dict[str, float]] = {}
    for mitigation in dict.fromkeys(r.mitigation for r in recs):
        row: dict[str, float] = {}
        idx = [i for i, r in enumerate(recs) if r.mitigation == mitigation and r.prompt in asked]
        for culture in world.CULTURES:
            mine = [i for i in idx if asked[recs[i].prompt][1] == culture]
            hits = {i: labels["culture"][i] == culture for i in mine}
            row[f"{culture}_followed"] = sum(hits.values()) / max(len(mine), 1)
            row[f"{culture}_ci_low"], row[f"{culture}_ci_high"] = seed_cluster_interval(recs, hits)
            row[f"{culture}_n"] = float(len(mine))
            row[f"{culture}_seeds"] = float(len({recs[i].seed for i in mine}))
            for prof in dict.fromkeys(asked[recs[i].prompt][0] for i in mine):
                of_prof = [i for i in mine if asked[recs[i].prompt][0] == prof]
                row[f"{prof}_{culture}"] = float(np.mean([labels["culture"][i] == culture for i in of_prof]))
        row["recognised"] = float(np.mean([labels["profession"][i] == asked[recs[i].prompt][0] for i in idx]))
        composed = [i for i in idx if asked[recs[i].prompt][2] is not None]
        if composed:  # the adjective beside the setting, and both at once
            kept, both = [], []
            for i in composed:
                _, culture, (head, cls) = asked[recs[i].prompt]
                kept.append(labels[head][i] == cls)
                both.append(kept[-1] and labels["culture"][i] == culture)
            row["adjective_followed"], row["both_followed"] = float(np.mean(kept)), float(np.mean(both))
        obj_idx = [i for i, r in enumerate(recs) if r.mitigation == mitigation and r.prompt in objects]
        if obj_idx:
            row["object_recognised"] = float(
                np.mean([labels["object"][i] == objects[recs[i].prompt] for i in obj_idx])
            )
            feats = object_features(recs, images, mitigation)
            row["object_n"] = float(len(feats))
            if len(none_feats) >= 2:  # a run without the unmitigated model has no yardstick in it
                row["frechet_vs_none"] = frechet_distance(feats, none_feats)
            if base_feats:
                row["frechet_vs_base_run"] = float(np.mean([frechet_distance(feats, b) for b in base_feats]))
        out[mitigation] = row
    if base_feats and len(none_feats) >= 2:
        sets = [none_feats, *base_feats]
        pairs = [
            frechet_distance(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))
        ]
        out["base_none"] = {f"pair_{k}": d for k, d in enumerate(pairs)}
        out["base_none"] |= {"mean": float(np.mean(pairs)), "object_n": float(len(base_feats[0]))}
    return out


def _short_name(mitigation: str) -> str:
    return "lora:" + Path(mitigation[5:]).parent.name if mitigation.startswith("lora:") else mitigation


def main_culture(run_dir: Path, base_run_dirs: list[Path]) -> None:
    table = referee_culture(run_dir, base_run_dirs)
    base = table.pop("base_none", None)
    print(
        "| mitigation | western followed (oracle) | non-western followed (oracle) | recognised (oracle) | "
        "adjective followed | both | objects recognised | Fréchet (CLIP) on objects vs none, same seeds | "
        "vs base model, other seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mitigation, row in table.items():
        cells = [
            f"{row[f'{c}_followed']:.3f} [{row[f'{c}_ci_low']:.3f}, {row[f'{c}_ci_high']:.3f}] "
            f"(n={row[f'{c}_n']:.0f}, {row[f'{c}_seeds']:.0f} seeds)"
            for c in ("western", "non-western")
        ]
        fd = f"{row['frechet_vs_none']:.4f}" if "frechet_vs_none" in row else "–"
        fd2 = f"{row['frechet_vs_base_run']:.4f}" if "frechet_vs_base_run" in row else "–"
        obj = f"{row['object_recognised']:.3f}" if "object_recognised" in row else "–"
        adj = " | ".join(
            f"{row[k]:.3f}" if k in row else "–" for k in ("adjective_followed", "both_followed")
        )
        name, rec = _short_name(mitigation), f"{row['recognised']:.3f}"
        print(f"| {name} | {cells[0]} | {cells[1]} | {rec} | {adj} | {obj} | {fd} | {fd2} |")
    if base is not None:
        print(
            f"\nbase model against itself on other seeds (objects, n={base['object_n']:.0f} each): Fréchet "
            + ", ".join(f"{v:.4f}" for k, v in base.items() if k.startswith("pair_"))
            + f" (mean {base['mean']:.4f})"
        )
    print()
    for mitigation, row in table.items():
        per = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k.endswith(("_western", "_non-western")))
        print(f"{_short_name(mitigation)}: {per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--culture", action="store_true", help="the alignment acceptance (culture followed)")
    parser.add_argument("runs", nargs="+", type=Path, help="an audit run (then base-model runs, --culture)")
    args = parser.parse_args()
    for run in args.runs:  # one line naming the folder, before any image is read
        if not (run / "results.sqlite").is_file():
            parser.error(f"{run}: no diffsteer run there (no results.sqlite)")
    if args.culture:
        main_culture(args.runs[0], args.runs[1:])
        return
    if len(args.runs) > 1:
        parser.error("base-model runs are read only with --culture")
    table = referee(args.runs[0])
    base = table.get("none")
    print(
        "| mitigation | mean gender DR, 5 skewed (oracle) | vs none | change vs none, 95% paired interval | "
        "recognised (oracle) | n/prompt |"
    )
    print("|---|---|---|---|---|---|")
    for mitigation, row in table.items():
        change = "" if base is None else f"{(row['mean_dr_skewed'] / base['mean_dr_skewed'] - 1) * 100:+.0f}%"
        interval = (
            f"{row['dr_change']:+.3f} [{row['dr_change_low']:+.3f}, {row['dr_change_high']:+.3f}]"
            if "dr_change" in row
            else ""
        )
        print(
            f"| {_short_name(mitigation)} | {row['mean_dr_skewed']:.3f} | {change} | {interval} | "
            f"{row['recognised_skewed']:.3f} | {row['n_per_prompt']:.0f} |"
        )
    print()
    for mitigation, row in table.items():
        shares = ", ".join(f"{p} {row[f'{p}_man_share']:.2f}" for p in SKEWED if f"{p}_man_share" in row)
        print(f"{mitigation}: man share {shares}")


if __name__ == "__main__":
    main()
