"""Do the audit's 95% deviation-ratio intervals contain the truth as often as they claim? (issue 22)

Run:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coverage.py simulate [--audits 1000] [--grid mixed]
      [--only 0.4/0.35/0.25 ...] [--write-results]
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coverage.py rates [--audits 1000] [--write-results]
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coverage.py generate --out runs/coverage   (long, resumes)
  .venv/bin/python benchmarks/coverage.py evaluate --out runs/coverage [--write-results]

``simulate`` (item 3a): simulated audits with known shares (diffsteer.metrics.simulation): two classes at
true shares 0.5-0.9 and three-class cases, 8-192 images per prompt, 1 or 8 prompts, prompts independent
or sharing each seed's noise, and audits whose prompts differ as pictoworld's professions do (``--grid
mixed`` runs only those); coverage and mean width of the new intervals next to the old ones
(percentile bootstrap of the plug-in, images redrawn per prompt), and compare's paired and unpaired
intervals of a difference between two runs on the same seeds.

``rates``: the unsafe rate pooled over prompts and a mitigation's reduction of it
(diffsteer.metrics.pooled_rate), on simulated audits of findings whose prompts share each seed's noise
(latent correlation 0, 0.5, 0.9), 8-128 images per prompt: coverage and width next to the plain
Clopper-Pearson interval that counts every image as independent.

``generate`` / ``evaluate`` (item 3b), pictoworld:

``generate`` runs small default-setting audits (``diffsteer.audit.run_audit``, pictoworld, guidance 1.25,
CLIP labels) on disjoint seed blocks, in rounds: each round is one audit per size (64 and 32 images per
prompt) and one truth block (64 images per prompt), so a run stopped early leaves every size with about the
same number of audits. After each block the oracle's labels of its images are cached beside it.

``evaluate`` recomputes every audit's intervals from its stored labels with the library's current method
(so the images need not be made again when the method changes) and counts how often they contain the
large-sample value. The large sample for an audit is every block but its own (truth blocks and the other
audits): seeds disjoint from the audit judged, pooled. Two truths are reported: the CLIP labels' own
large-sample DR (what the audit's interval estimates) and the oracle's (the model's true DR, which the
CLIP labels can only reach up to the classifier's error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BASE_SEED = 3_000_000  # no test or benchmark uses these seeds
SIZES = (64, 32)
TRUTH_BLOCK = 64
AXES = {"gender": ("man", "woman"), "skin_tone": ("light", "dark")}
ORACLE_FILE = "oracle_labels.json"


def _blocks(rounds: int, extra_truth: int) -> list[tuple[str, int, int]]:
    """(name, images per prompt, first seed) of every block, in the order they are made."""
    stride = sum(SIZES) + TRUTH_BLOCK
    out = []
    for r in range(rounds):
        seed = BASE_SEED + r * stride
        for size in SIZES:
            out.append((f"audit-n{size}-r{r:02d}", size, seed))
            seed += size
        out.append((f"truth-r{r:02d}", TRUTH_BLOCK, seed))
    for t in range(extra_truth):
        out.append((f"truth-x{t:02d}", TRUTH_BLOCK, BASE_SEED + rounds * stride + t * TRUTH_BLOCK))
    return out


def _oracle_labels(run_dir: Path) -> None:
    """Cache the oracle's gender and skin-tone label of every image of a finished block."""
    from diffsteer.pictoworld import oracle_dir
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.runs.store import RunStore

    store = RunStore.open_existing(run_dir)
    try:
        recs = store.images(status="ok")
        images = np.stack([np.asarray(store.load_image(r).convert("RGB")) for r in recs])
    finally:
        store.close()
    labels = predict(load_oracle(oracle_dir()), images)
    out = {r.key: {axis: labels[axis][i] for axis in AXES} for i, r in enumerate(recs)}
    (run_dir / ORACLE_FILE).write_text(json.dumps(out))


def generate(out: Path, rounds: int, extra_truth: int) -> None:
    from diffsteer.audit import AuditConfig, run_audit

    out.mkdir(parents=True, exist_ok=True)
    for name, size, seed in _blocks(rounds, extra_truth):
        run_dir = out / name
        if (run_dir / ORACLE_FILE).is_file():
            continue
        started = time.time()
        config = AuditConfig(model="pictoworld", images_per_prompt=size, seed=seed)
        run_audit(config, run_dir, resume=True, reference=None)
        _oracle_labels(run_dir)
        print(
            f"{time.strftime('%H:%M:%S')} {name}: {size} images/prompt from seed {seed}, "
            f"{time.time() - started:.0f} s",
            flush=True,
        )


def _block_labels(run_dir: Path) -> dict[tuple[str, str], dict[str, list]]:
    """(source, axis) -> prompt -> labels in seed order (None: no label); source "clip" or "oracle"."""
    from diffsteer.runs.store import RunStore

    store = RunStore.open_existing(run_dir)
    try:
        classifier = store.config["classifier"]
        recs = sorted(store.images(), key=lambda r: (r.prompt, r.seed))
        clip = {(lab.key, lab.axis): lab.label for lab in store.labels(classifier)}
    finally:
        store.close()
    oracle = json.loads((run_dir / ORACLE_FILE).read_text())
    out: dict[tuple[str, str], dict[str, list]] = {}
    for axis, classes in AXES.items():
        for source in ("clip", "oracle"):
            table: dict[str, list] = {}
            for r in recs:
                label = clip.get((r.key, axis)) if source == "clip" else oracle.get(r.key, {}).get(axis)
                table.setdefault(r.prompt, []).append(label if label in classes else None)
            out[(source, axis)] = table
    return out


def evaluate(out: Path) -> str:
    from diffsteer.metrics import summarize_axis, summarize_labels
    from diffsteer.metrics.bias import deviation_ratio

    done = sorted(p for p in out.iterdir() if (p / ORACLE_FILE).is_file())
    labels = {p.name: _block_labels(p) for p in done}
    audits = [name for name in labels if name.startswith("audit-")]
    lines = []
    for source_truth in ("clip", "oracle"):
        for size in SIZES:
            names = [n for n in audits if n.startswith(f"audit-n{size}-")]
            if not names:
                continue
            hits_prompt = cells_prompt = hits_agg = cells_agg = inside = old_prompt = old_agg = 0
            agg_below = agg_above = 0  # aggregate intervals wholly below / above the large-sample value
            held_out = []
            for name in names:
                for axis, classes in AXES.items():
                    table = labels[name][("clip", axis)]
                    prompts = list(table)
                    # the large sample: every other block (truth blocks and other audits), pooled per prompt
                    truth_counts = np.zeros((len(prompts), len(classes)))
                    for other, other_labels in labels.items():
                        if other == name:
                            continue
                        for i, prompt in enumerate(prompts):
                            for lab in other_labels[(source_truth, axis)].get(prompt, []):
                                if lab is not None:
                                    truth_counts[i, classes.index(lab)] += 1
                    held_out.append(truth_counts.sum(axis=1).min())
                    true_dr = deviation_ratio(truth_counts)
                    matrix = np.array(
                        [[classes.index(lab) if lab is not None else -1 for lab in table[p]] for p in prompts]
                    )
                    m = summarize_labels(matrix, classes, prompts)
                    # the intervals before issue 22: plug-in, percentile, images redrawn per prompt
                    old = summarize_axis(
                        {
                            p: {c: int((matrix[i] == k).sum()) for k, c in enumerate(classes)}
                            for i, p in enumerate(prompts)
                        },
                        classes,
                    )
                    for i, (pm, om) in enumerate(zip(m.prompts, old.prompts, strict=True)):
                        lo, hi = pm.deviation_ratio_ci95
                        cells_prompt += 1
                        hits_prompt += bool(lo <= true_dr[i] <= hi)
                        inside += bool(lo <= pm.deviation_ratio <= hi)
                        olo, ohi = om.plugin_deviation_ratio_ci95
                        old_prompt += bool(olo <= true_dr[i] <= ohi)
                    lo, hi = m.mean_deviation_ratio_ci95
                    cells_agg += 1
                    hits_agg += bool(lo <= float(true_dr.mean()) <= hi)
                    agg_below += bool(hi < float(true_dr.mean()))
                    agg_above += bool(lo > float(true_dr.mean()))
                    olo, ohi = old.plugin_mean_deviation_ratio_ci95
                    old_agg += bool(olo <= float(true_dr.mean()) <= ohi)
            lines.append(
                f"| {source_truth} | {size} | {len(names)} | {min(held_out):.0f} | "
                f"{hits_prompt / cells_prompt:.3f} ({hits_prompt}/{cells_prompt}) | "
                f"{hits_agg / cells_agg:.3f} ({hits_agg}/{cells_agg}) | {agg_below} / {agg_above} | "
                f"{inside / cells_prompt:.3f} | "
                f"{old_prompt / cells_prompt:.3f} | {old_agg / cells_agg:.3f} |"
            )
    n_truth = sum(1 for n in labels if n.startswith("truth-"))
    per_size = ", ".join(
        f"{sum(n.startswith(f'audit-n{size}-') for n in audits)} at {size}" for size in SIZES
    )
    text = (
        f"Blocks finished: {len(audits)} audits ({per_size} images per prompt), {n_truth} truth blocks of "
        f"{TRUTH_BLOCK} images per prompt; 8 professions x 2 axes per audit.\n\n"
        "| truth labels | images/prompt | audits | held-out images/prompt (min) | per-prompt coverage | "
        "aggregate coverage | aggregate below / above the truth | estimate inside | "
        "old per-prompt coverage | old aggregate coverage |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines)
    )
    print(text)
    return text


# --- simulation -----------------------------------------------------------------------------------------

TWO_CLASS = (0.5, 0.55, 0.6, 0.7, 0.9)
THREE_CLASS = ((0.4, 0.35, 0.25), (0.6, 0.2, 0.2))
IMAGES = (8, 16, 64, 192)
PROMPTS = (1, 8)
PAIRS = (((0.7, 0.3), (0.6, 0.4)), ((0.5, 0.5), (0.5, 0.5)), ((0.9, 0.1), (0.55, 0.45)))
# Audits whose prompts differ, as pictoworld's do: the planted first-class shares of the eight
# professions (doctor, nurse, pilot, soldier, hairdresser, lawyer, chef, painter) on gender and skin tone.
# On gender the skewed prompts lean both ways (nurse and hairdresser towards women).
MIXED = {
    "pictoworld gender": (0.85, 0.15, 0.85, 0.90, 0.20, 0.50, 0.50, 0.50),
    "pictoworld skin tone": (0.50, 0.50, 0.80, 0.50, 0.25, 0.85, 0.50, 0.50),
}
MIXED_IMAGES = (16, 32, 64)
_COLUMNS = (
    "| true shares | true mean DR | prompts | correlated | images/prompt | coverage (mean DR) | "
    "interval below / above the truth | width | per-prompt coverage | estimate inside | mean estimate | "
    "old coverage | old width | old mean estimate | oracle width |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def _cell_row(name: str, r) -> str:
    return (
        f"| {name} | {r.true_mean_dr:.2f} | {r.prompts} | {'yes' if r.correlated else 'no'} | {r.images} | "
        f"**{r.coverage:.3f}** | {r.below:.3f} / {r.above:.3f} | {r.width:.3f} | {r.prompt_coverage:.3f} | "
        f"{r.point_inside:.3f} | {r.mean_estimate:.3f} | {r.old_coverage:.3f} | {r.old_width:.3f} | "
        f"{r.old_mean_estimate:.3f} | {r.oracle_width:.3f} |"
    )


def simulate(n_audits: int, n_boot: int, grid: str = "all", only: list[str] | None = None) -> str:
    from diffsteer.metrics.simulation import simulate_cell, simulate_paired_difference

    started = time.time()
    header = (
        f"{n_audits} simulated audits per cell, {n_boot} redraws each. Correlated: every prompt's label on "
        "a seed shares a latent normal (correlation 0.9 between prompts' latents), as pictoworld's seeds do."
        "\n\n"
    )
    parts = []
    if grid == "all":
        rows = []
        for shares in [(s, 1 - s) for s in TWO_CLASS] + list(THREE_CLASS):
            if only and _shares_name(shares) not in only:
                continue
            for prompts in PROMPTS:
                for correlated in (False, True) if prompts > 1 else (False,):
                    for images in IMAGES:
                        r = simulate_cell(
                            shares, prompts, images, correlated, n_audits, n_boot, seed=images + prompts
                        )
                        rows.append(_cell_row(_shares_name(shares), r))
                        print(rows[-1], flush=True)
        parts.append(_COLUMNS + "\n".join(rows))
    if only:  # a re-run of some grid rows: no mixed audits, no differences
        timing = f"each; {time.time() - started:.0f} s on one core."
        return header.replace("each.", timing) + "\n\n".join(parts)
    rows = []
    for name, first in MIXED.items():
        table = tuple((s, 1 - s) for s in first)
        for correlated in (False, True):
            for images in MIXED_IMAGES:
                r = simulate_cell(table, len(table), images, correlated, n_audits, n_boot, seed=images + 1)
                rows.append(_cell_row(name, r))
                print(rows[-1], flush=True)
    parts.append(
        "Prompts that differ (pictoworld's planted shares, "
        + "; ".join(
            f"{name}: first-class shares {'/'.join(f'{x:g}' for x in first)}" for name, first in MIXED.items()
        )
        + "):\n\n"
        + _COLUMNS
        + "\n".join(rows)
    )
    if grid == "all":
        pair_rows = []
        for a, b in PAIRS:
            for images in (16, 64):
                r = simulate_paired_difference(a, b, 8, images, n_audits, n_boot, seed=images)
                pair_rows.append(
                    f"| {a[0]:g} -> {b[0]:g} | {r['true_difference']:+.2f} | {images} | "
                    f"**{r['paired_coverage']:.3f}** | {r['paired_width']:.3f} | "
                    f"{r['unpaired_coverage']:.3f} | {r['unpaired_width']:.3f} |"
                )
                print(pair_rows[-1], flush=True)
        parts.append(
            "`compare` of two runs on the same seeds (8 prompts, correlated), interval of the change in "
            "mean DR, B - A:\n\n| first share A -> B | true change | images/prompt | paired coverage | "
            "paired width | unpaired coverage | unpaired width |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(pair_rows)
        )
    return header.replace("each.", f"each; {time.time() - started:.0f} s on one core.") + "\n\n".join(parts)


# unsafe rates per prompt: red-team findings (most images unsafe) and planted everyday rates (5-45%)
RATE_PROMPTS = {
    "9 findings, 0.2-0.9": (0.2, 0.4, 0.6, 0.8, 0.9, 0.5, 0.3, 0.7, 0.6),
    "5 everyday, 0.05-0.45": (0.05, 0.1, 0.15, 0.3, 0.45),
}
# the mitigated arm: every prompt's rate times a factor, or half the prompts fixed and half untouched
RATE_MITIGATIONS = {"x1": 1.0, "x0.5": 0.5, "x0.1": 0.1, "x0.02": 0.02, "half fixed": None}
RATE_IMAGES = (8, 16, 32, 64, 128)
RATE_CORRELATIONS = (0.0, 0.5, 0.9)


def simulate_rates(n_audits: int) -> str:
    from diffsteer.metrics.simulation import simulate_rate_reduction

    started = time.time()
    rows = []
    for prompts_name, base in RATE_PROMPTS.items():
        for mitigation, factor in RATE_MITIGATIONS.items():
            if factor is None:
                mitigated = tuple(0.0 if i % 2 == 0 else b for i, b in enumerate(base))
            else:
                mitigated = tuple(factor * b for b in base)
            for correlation in RATE_CORRELATIONS:
                for images in RATE_IMAGES:
                    r = simulate_rate_reduction(base, mitigated, images, correlation, n_audits, seed=images)
                    rows.append(
                        f"| {prompts_name} | {mitigation} | {correlation:g} | {images} | "
                        f"{r['true_reduction']:.2f} | **{r['reduction_coverage']:.3f}** | "
                        f"{r['reduction_below']:.3f} / {r['reduction_above']:.3f} | "
                        f"{r['reduction_width']:.3f} | "
                        f"{r['no_estimate']:.3f} | **{r['rate_coverage']:.3f}** | {r['rate_width']:.3f} | "
                        f"{r['plain_rate_coverage']:.3f} | {r['plain_rate_width']:.3f} |"
                    )
                    print(rows[-1], flush=True)
    return (
        f"{n_audits} simulated audits per cell; {time.time() - started:.0f} s on one core. Both arms of a "
        "seed share its common latent. Reduction = 1 - mitigated rate / baseline rate; an audit whose "
        "baseline drew no unsafe image has none (counted as a miss). Rate columns: both arms' pooled "
        "rates, the clustered interval (each arm at least the other's design effect) and the plain "
        "Clopper-Pearson one.\n\n"
        "| prompts | mitigation | latent correlation | images/prompt | true reduction | reduction coverage | "
        "wholly below / above | width | no estimate | rate coverage | width | plain rate coverage | "
        "plain width |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def _shares_name(shares: tuple[float, ...]) -> str:
    return "/".join(f"{x:g}" for x in shares)


def _append_results(title: str, command: str, body: str) -> None:
    results = Path(__file__).with_name("RESULTS.md")
    with results.open("a", encoding="utf-8") as f:
        f.write(f"\n## {title} — {time.strftime('%Y-%m-%d')}\n\nCommand: `{command}`\n\n{body}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("simulate", "rates", "generate", "evaluate"))
    parser.add_argument("--out", type=Path, default=Path("runs/coverage"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--extra-truth", type=int, default=12, help="truth blocks after the rounds")
    parser.add_argument("--audits", type=int, default=1000, help="simulated audits per cell")
    parser.add_argument("--boot", type=int, default=1000, help="redraws per simulated audit")
    parser.add_argument("--write-results", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument(
        "--grid",
        choices=("all", "mixed"),
        default="all",
        help="simulate: the whole grid, or only the audits whose prompts differ (minutes, not half an hour)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SHARES",
        help="simulate: only this row of the grid (e.g. 0.4/0.35/0.25; repeat for more); "
        "no mixed audits or differences",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.mode == "generate":
        generate(args.out, args.rounds, args.extra_truth)
        return 0
    if args.mode == "simulate":
        body = simulate(args.audits, args.boot, args.grid, args.only)
        title = "coverage of the DR intervals, simulated (issue 22)"
    elif args.mode == "rates":
        body = simulate_rates(args.audits)
        title = "coverage of the pooled unsafe rate and its reduction, simulated (issue 24)"
    else:
        body, title = evaluate(args.out), "coverage of the DR intervals on pictoworld (issue 22)"
    if args.mode in ("simulate", "rates"):
        print(body)
    if args.write_results:
        _append_results(title, command, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
