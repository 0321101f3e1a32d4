"""How likely a candidate that passed the held-out verdict is to pass the pinned tests' own seeds.

Run:  .venv/bin/python research/pictoworld_pass_odds.py OUT [OUT ...] [--draws 20000] [--min-odds 0.25]

The held-out verdict (research/heldout_verdict.py) asks whether each held-out figure is inside its
rule. A figure just inside, say the lawyer's combination at 0.332 for an edge of 0.33, says little about
a fresh block of images: the candidate then meets the pinned tests' seeds with about even odds in that
cell alone. This script turns the held-out figures into those odds, in seconds and without a model:
for every pinned cell it draws the candidate's true rate from the held-out counts (Jeffreys posterior,
Beta(k + 1/2, n - k + 1/2)), then a block of the tests' size from it, and applies the tests' rule for
that cell (those of `evaluate.audit_misses`, `evaluate.neutral_share_misses` and
`evaluate.unsafe_misses`, and the 7.5 prompts' and recognition's minimum). It prints the same odds for
a model exact to its world (every planted cell drawn at its planted value, a classifier without error):
the most a candidate can have. Cells are drawn independently, so the joint figure is a product of the
cells' odds; the tests share seeds across prompts, which this ignores.

Not covered: the steering tests (fair noise directions, the studio's fair generation, the h-space
vectors), whose figures need the re-learned steering files; the held-out chain does not measure them.

OUT is a candidate folder with figures/ from tools/retrain_pictoworld.sh:
pictoworld_default_seed5000.json (neutral shares, 128 images), pictoworld_7.5_seed5000.json (64 per
explicit prompt, 128 for recognition), pictoworld_unsafe_seed5000.json (or the gate's
gate_seed5000.json, the same measurement) and the audit summary (OUT/audit_seed5000/summary.json, or
figures/audit_seed5000_summary.json as candidates/ keep it). With --min-odds the exit status is 1 when a
candidate's odds are lower: the chain's gate before its steering and tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from diffsteer.metrics.intervals import debiased_deviation_ratio
from diffsteer.pictoworld import evaluate, world
from diffsteer.summary import Summary

# the held-out chain's sizes (tools/retrain_pictoworld.sh) and the pinned tests' (tests/pictoworld/)
HELDOUT_NEUTRAL_SHARES = 128  # --n-neutral, also recognition at 7.5
HELDOUT_EXPLICIT = 64  # --n-explicit
TEST_NEUTRAL_SHARES = 64
TEST_AUDIT_IMAGES = 192  # AuditConfig's default images per prompt
TEST_EXPLICIT_7_5 = 32
TEST_RECOGNISED_7_5 = 64
TEST_UNSAFE_EXPLICIT = 64
TEST_UNSAFE_NEUTRAL = 256
MINIMUM_7_5 = 0.85


class _Truth:
    """A cell's true rate: drawn from its held-out counts, or, for an exact model, the planted one; with
    ``offset`` > 0, an exact model's every cell strictly between 0 and 1 strays from its planted value by a
    normal offset of that standard deviation, drawn once per cell (a model that fits its world that well)."""

    def __init__(self, rng: np.random.Generator, draws: int, exact: bool, offset: float = 0.0):
        self.rng, self.draws, self.exact, self.offset = rng, draws, exact, offset

    def rates(self, share: float | None, n: int, planted: float | None = None) -> np.ndarray:
        if self.exact and planted is not None:
            rate = planted
            if self.offset and 0 < planted < 1:
                rate = float(np.clip(planted + self.rng.normal(0, self.offset), 0, 1))
            return np.full(self.draws, rate)
        if share is None or n == 0:  # nothing read (no oracle head, no image in the setting): never passes
            return np.full(self.draws, np.nan)
        k = round(share * n)
        return self.rng.beta(k + 0.5, n - k + 0.5, size=self.draws)

    def fresh(self, share: float | None, n: int, n_test: int, planted: float | None = None) -> np.ndarray:
        """Shares of a fresh block of n_test images (NaN, which fails every rule, where nothing was read)."""
        rates = self.rates(share, n, planted)
        if np.isnan(rates).any() or n_test == 0:
            return np.full(self.draws, np.nan)
        return self.rng.binomial(n_test, rates) / n_test


def cell_pass_odds(
    figures: dict, audit: Summary, draws: int = 20000, seed: int = 0, exact: bool = False, offset: float = 0.0
) -> dict[str, float]:
    """Each pinned cell's chance of passing on a fresh block of the tests' size, keyed by a readable
    name; `figures` holds the three held-out JSON files as "default", "high" and "unsafe". With
    `exact`, every cell with a planted value is drawn at it: the odds of a model that fits its world
    exactly, the most any candidate can have (cells with no planted value keep the held-out figure); with
    `offset` as well, a model whose cells stray from their planted values by that much (see _Truth)."""
    truth = _Truth(np.random.default_rng(seed), draws, exact, offset)
    odds: dict[str, float] = {}

    rows = {(r.axis, r.prompt): r for r in audit.rows(mitigation="none")}
    for prof in world.PROFESSIONS:
        prompt = f"a photo of {world.article(prof)} {prof}"
        for axis in ("gender", "skin_tone"):
            planted = world.planted_deviation_ratio(prof, axis)
            control = planted == 0 and prof in world.CONTROL_PROFESSIONS
            if planted == 0 and not control:
                continue
            n = rows[(axis, prompt)].n_counted
            if n == 0:
                odds[f"audit DR {prof} {axis}"] = 0.0
                continue
            (first_class, first_count), *_ = rows[(axis, prompt)].counts.items()
            planted_first = world.planted_shares(prof)[axis][first_class]
            first = truth.rng.binomial(TEST_AUDIT_IMAGES, truth.rates(first_count / n, n, planted_first))
            dr = debiased_deviation_ratio(np.stack([first, TEST_AUDIT_IMAGES - first], axis=-1))
            if control:
                ok = dr <= evaluate.CONTROL_LIMIT
            else:
                ok = np.abs(dr - planted) <= evaluate.SHARE_TOLERANCE
            odds[f"audit DR {prof} {axis}"] = float(ok.mean())

    for prof, s in figures["default"]["neutral_professions"].items():
        planted = world.planted_shares(prof)
        for axis, key, value in (("gender", "man_share", "man"), ("skin_tone", "light_share", "light")):
            if planted[axis][value] != 0.5 or (axis == "gender" and prof in world.CONTROL_PROFESSIONS):
                fresh = truth.fresh(s[key], HELDOUT_NEUTRAL_SHARES, TEST_NEUTRAL_SHARES, planted[axis][value])
                ok = np.abs(fresh - planted[axis][value]) <= evaluate.SHARE_TOLERANCE
                odds[f"neutral share {prof} {axis}"] = float(ok.mean())

    high = figures["high"]
    for prompt in evaluate.PERSON_PROMPTS:
        share = high["explicit_prompt_accuracy"][prompt]
        fresh = truth.fresh(share, HELDOUT_EXPLICIT, TEST_EXPLICIT_7_5)
        odds[f"explicit at 7.5 {prompt!r}"] = float((fresh >= MINIMUM_7_5).mean())
    for prof, s in high["neutral_professions"].items():
        fresh = truth.fresh(s["recognised"], HELDOUT_NEUTRAL_SHARES, TEST_RECOGNISED_7_5)
        odds[f"recognised at 7.5 {prof}"] = float((fresh >= MINIMUM_7_5).mean())

    unsafe = figures["unsafe"]
    for kind in ("explicit", "paraphrase"):
        for prompt, row in unsafe[kind].items():
            fresh = truth.fresh(row["rate"], row["n"], TEST_UNSAFE_EXPLICIT)
            odds[f"unsafe {kind} {prompt!r}"] = float((fresh >= evaluate.UNSAFE_FOLLOW_MINIMUM).mean())
    for prompt, row in unsafe["neutral"].items():
        n = row.get("n_given", row["n"])
        # a combination is read on the images drawn in its setting; the tests' block keeps that share
        n_test = round(TEST_UNSAFE_NEUTRAL * n / row["n"])
        for concept, planted in row["planted"].items():
            fresh = truth.fresh(row["measured"][concept], n, n_test, planted)
            ok = np.abs(fresh - planted) <= evaluate.UNSAFE_RATE_TOLERANCE
            odds[f"unsafe neutral {prompt!r} {concept}"] = float(ok.mean())
    return odds


def load_figures(out: Path) -> tuple[dict, Summary]:
    f = out / "figures"
    figures = {
        "default": json.loads((f / "pictoworld_default_seed5000.json").read_text()),
        "high": json.loads((f / "pictoworld_7.5_seed5000.json").read_text()),
    }
    unsafe_path = f / "pictoworld_unsafe_seed5000.json"
    if not unsafe_path.exists():  # the gate's run, on the same seeds and sizes, as candidates/ keep it
        unsafe_path = f / "gate_seed5000.json"
    figures["unsafe"] = json.loads(unsafe_path.read_text())
    summary_path = out / "audit_seed5000" / "summary.json"
    if not summary_path.exists():
        summary_path = f / "audit_seed5000_summary.json"
    return figures, Summary.from_json(summary_path.read_text())


def offset_odds(figures: dict, audit: Summary, offset: float, models: int, draws: int) -> np.ndarray:
    """The joint odds of ``models`` simulated models whose cells stray from the planted values by normal
    offsets of standard deviation ``offset`` (each model its own offsets)."""
    joint = []
    for model in range(models):
        odds = cell_pass_odds(figures, audit, draws=draws, seed=1000 + model, exact=True, offset=offset)
        joint.append(np.prod(list(odds.values())))
    return np.array(joint)


def print_offset_odds(out: Path, offsets: list[float], models: int, min_odds: float) -> None:
    """How the odds fall with a model's per-cell offsets, and so how many training seeds a search needs
    to find one model at ``min_odds`` or better (1 / the share of such models)."""
    figures, audit = load_figures(out)
    print(f"simulated models on {out}'s cells and sizes, {models} per offset:")
    for offset in offsets:
        joint = offset_odds(figures, audit, offset, models, draws=2000)
        share = float((joint >= min_odds).mean())
        seeds = f"about {1 / share:.0f}" if share else f"more than {models}"
        print(
            f"  offsets sd {offset:.3f}: joint odds median {np.median(joint):.2f}, "
            f"share of models at {min_odds:g} or better {share:.2f}, seeds to find one {seeds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="+", help="candidate folders (retrain_pictoworld.sh OUT)")
    parser.add_argument("--draws", type=int, default=20000)
    parser.add_argument("--show", type=int, default=6, help="the cells least likely to pass, per candidate")
    parser.add_argument(
        "--min-odds", type=float, default=0.0, help="exit 1 when a candidate's odds are lower"
    )
    parser.add_argument(
        "--offsets",
        default=None,
        help="instead: simulated models straying from their world by these sds, e.g. 0.01,0.02,0.03 "
        "(OUT gives the cells and sizes); prints the share of models at --min-odds (default 0.25)",
    )
    parser.add_argument("--models", type=int, default=200, help="simulated models per offset")
    args = parser.parse_args()
    if args.offsets is not None:
        offsets = [float(x) for x in args.offsets.split(",")]
        print_offset_odds(args.out[0], offsets, args.models, args.min_odds or 0.25)
        return
    below = []
    for out in args.out:
        try:
            figures, audit = load_figures(out)
        except FileNotFoundError as err:
            print(
                f"pictoworld_pass_odds: missing {err.filename}; run tools/retrain_pictoworld.sh first",
                file=sys.stderr,
            )
            sys.exit(2)
        odds = cell_pass_odds(figures, audit, draws=args.draws)
        exact = cell_pass_odds(figures, audit, draws=args.draws, exact=True)
        joint, joint_exact = np.prod(list(odds.values())), np.prod(list(exact.values()))
        print(
            f"{out}: {len(odds)} pinned cells; chance that all pass on the tests' seeds {joint:.2f} "
            f"(a model exact to its world: {joint_exact:.2f})"
        )
        for name, p in sorted(odds.items(), key=lambda kv: kv[1])[: args.show]:
            print(f"  {p:.2f}  {name}")
        if joint < args.min_odds:
            below.append(f"{out} {joint:.2f}")
    if below:
        print(f"odds under {args.min_odds:g}: {', '.join(below)}; do not run the rest of the chain")
        sys.exit(1)


if __name__ == "__main__":
    main()
