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
TEST_NEUTRAL_SHARES = 128
TEST_AUDIT_IMAGES = 384  # the audit test passes --images 384
TEST_EXPLICIT_7_5 = 32
TEST_RECOGNISED_7_5 = 64
TEST_UNSAFE_EXPLICIT = 64
TEST_UNSAFE_NEUTRAL = 256
MINIMUM_7_5 = 0.85


class _Truth:
    """A cell's true rate: drawn from its held-out counts, or, for an exact model, the planted one; with
    ``offset`` > 0, an exact model's every cell strictly between 0 and 1 strays from its planted value by a
    normal offset of that standard deviation, drawn once per cell (a model that fits its world that well).

    How a held-out count becomes rates: with ``shrink_sd`` None, the Jeffreys posterior (every rate in
    [0, 1] alike before the count), which is far too wide for a model trained on its world: it gives an
    exact model odds of about 0.04 (RESULTS.md, "the pass odds were not calibrated"). With ``shrink_sd``,
    the posterior under a normal prior around the planted value of that sd, the model's own spread beyond
    sampling (estimate_offset_sd), for cells with a planted value strictly between 0 and 1. ``record``
    collects (share, n, planted) of those cells, for that estimate. With ``measured`` (and ``exact``),
    the model's true rates are the candidate's own held-out figures where a cell has a planted value: a
    model with a real candidate's offsets, the systematic ones included."""

    def __init__(
        self,
        rng: np.random.Generator,
        draws: int,
        exact: bool,
        offset: float = 0.0,
        simulate_heldout: bool = False,
        shrink_sd: float | None = None,
        measured: bool = False,
    ):
        self.rng, self.draws, self.exact, self.offset = rng, draws, exact, offset
        self.simulate_heldout, self.shrink_sd, self.measured = simulate_heldout, shrink_sd, measured
        self.record: list[tuple[float, int, float]] = []
        # own streams, so that one seed gives a model the same offsets and held-out block in every pass
        seed = int(rng.integers(2**32))
        self.offset_rng = np.random.default_rng([seed, 1])
        self.heldout_rng = np.random.default_rng([seed, 2])

    @classmethod
    def make(
        cls,
        draws: int = 20000,
        seed: int = 0,
        exact: bool = False,
        offset: float = 0.0,
        simulate_heldout: bool = False,
        shrink_sd: float | None = None,
        measured: bool = False,
    ) -> _Truth:
        rng = np.random.default_rng(seed)
        return cls(rng, draws, exact, offset, simulate_heldout, shrink_sd, measured)

    def rates(self, share: float | None, n: int, planted: float | None = None) -> np.ndarray:
        if self.exact and planted is not None:
            rate = planted
            if self.measured and share is not None:
                rate = share
            elif self.offset and 0 < planted < 1:
                rate = float(np.clip(planted + self.offset_rng.normal(0, self.offset), 0, 1))
            if not self.simulate_heldout:
                return np.full(self.draws, rate)
            # what the script would read from such a model: its own held-out block
            share = self.heldout_rng.binomial(n, rate) / n
        if share is None or n == 0:  # nothing read (no oracle head, no image in the setting): never passes
            return np.full(self.draws, np.nan)
        k = round(share * n)
        if planted is None or not 0 < planted < 1:
            return self.rng.beta(k + 0.5, n - k + 0.5, size=self.draws)
        self.record.append((k / n, n, planted))
        if self.shrink_sd is None:
            return self.rng.beta(k + 0.5, n - k + 0.5, size=self.draws)
        grid = np.linspace(0.0005, 0.9995, 1000)
        log_prior = -0.5 * ((grid - planted) / self.shrink_sd) ** 2
        log_post = k * np.log(grid) + (n - k) * np.log1p(-grid) + log_prior
        weights = np.exp(log_post - log_post.max())
        return self.rng.choice(grid, size=self.draws, p=weights / weights.sum())

    def fresh(self, share: float | None, n: int, n_test: int, planted: float | None = None) -> np.ndarray:
        """Shares of a fresh block of n_test images (NaN, which fails every rule, where nothing was read)."""
        rates = self.rates(share, n, planted)
        if np.isnan(rates).any() or n_test == 0:
            return np.full(self.draws, np.nan)
        return self.rng.binomial(n_test, rates) / n_test


def cell_pass_odds(
    figures: dict, audit: Summary, truth: _Truth | None = None, **truth_args
) -> dict[str, float]:
    """Each pinned cell's chance of passing on a fresh block of the tests' size, keyed by a readable
    name; `figures` holds the three held-out JSON files as "default", "high" and "unsafe". With
    `exact`, every cell with a planted value is drawn at it: the odds of a model that fits its world
    exactly, the most any candidate can have (cells with no planted value keep the held-out figure); with
    `offset` as well, a model whose cells stray from their planted values by that much (see _Truth); with
    `simulate_heldout` as well, what this script says of that model from a held-out block of its own;
    `shrink_sd`: see _Truth. These keywords go to _Truth.make; a `truth` given replaces the one they make."""
    if truth is None:
        truth = _Truth.make(**truth_args)
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


MIN_SHRINK_SD = 0.005  # a floor: a prior of zero width would ignore the counts altogether


def estimate_offset_sd(cells: list[tuple[float, int, float]]) -> float:
    """The spread of a model's (share, images, planted) cells beyond binomial sampling, over every planted
    cell the script reads (bias shares and unsafe rates; evaluate.spread_beyond_sampling reads the unsafe
    ones only)."""
    return evaluate.excess_spread([(share - p, n, p) for share, n, p in cells])


def calibrated_pass_odds(figures: dict, audit: Summary, **truth_args) -> tuple[dict[str, float], float]:
    """Each pinned cell's odds, each planted cell's rate drawn from its counts shrunk toward the planted
    value by the model's own spread beyond sampling (estimated from the same counts), and that spread.
    Checked by simulation against models of known offsets (--check); the Jeffreys odds are not."""
    first = _Truth.make(**{**truth_args, "draws": 1})
    cell_pass_odds(figures, audit, truth=first)
    sd = estimate_offset_sd(first.record)
    return cell_pass_odds(figures, audit, shrink_sd=max(sd, MIN_SHRINK_SD), **truth_args), sd


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


def check_calibration(
    figures: dict, audit: Summary, offsets: list[float], models: int, draws: int = 2000
) -> list[tuple[float, float, float, float]]:
    """Simulated models with known offsets, each with a held-out block of its own: per model (offset sd,
    true joint odds, what calibrated_pass_odds says from the block, what the Jeffreys odds say)."""
    rows = []
    for offset in offsets:
        for model in range(models):
            common = dict(draws=draws, seed=1000 + model, exact=True, offset=offset)
            true = cell_pass_odds(figures, audit, **common)
            said, _ = calibrated_pass_odds(figures, audit, simulate_heldout=True, **common)
            jeffreys = cell_pass_odds(figures, audit, simulate_heldout=True, **common)
            rows.append((offset, *(float(np.prod(list(o.values()))) for o in (true, said, jeffreys))))
    return rows


def check_measured(figures: dict, audit: Summary, models: int, draws: int = 2000) -> tuple[float, np.ndarray]:
    """A model whose true rates are this candidate's held-out figures, and ``models`` held-out blocks of
    it: its true joint odds, and per block what the calibrated and the Jeffreys odds say."""
    truth = dict(draws=draws, exact=True, measured=True)
    true = float(np.prod(list(cell_pass_odds(figures, audit, **truth).values())))
    said = []
    for model in range(models):
        common = dict(truth, seed=1000 + model, simulate_heldout=True)
        calibrated, _ = calibrated_pass_odds(figures, audit, **common)
        jeffreys = cell_pass_odds(figures, audit, **common)
        said.append([np.prod(list(o.values())) for o in (calibrated, jeffreys)])
    return true, np.array(said)


def print_calibration(out: Path, offsets: list[float], models: int) -> None:
    figures, audit = load_figures(out)
    rows = np.array(check_calibration(figures, audit, offsets, models))
    print(f"simulated models on {out}'s cells and sizes, {models} per offset, each with a held-out block:")
    for offset in offsets:
        r = rows[rows[:, 0] == offset]
        print(
            f"  offsets sd {offset:.3f}: true joint odds median {np.median(r[:, 1]):.3f}, "
            f"calibrated {np.median(r[:, 2]):.3f}, Jeffreys {np.median(r[:, 3]):.3f}"
        )
    print("  models grouped by their calibrated odds:")
    for lo, hi in ((0, 0.05), (0.05, 0.15), (0.15, 0.25), (0.25, 0.4), (0.4, 1.01)):
        group = rows[(rows[:, 2] >= lo) & (rows[:, 2] < hi)]
        if len(group):
            print(
                f"    [{lo:.2f}, {min(hi, 1):.2f}): {len(group)} models, mean calibrated "
                f"{group[:, 2].mean():.3f}, mean true {group[:, 1].mean():.3f}"
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
    parser.add_argument(
        "--check",
        action="store_true",
        help="instead: check the calibrated odds against simulated models of known offsets "
        "(--offsets, default 0,0.01,0.02,0.03,0.04; --models each), each with its own held-out block",
    )
    parser.add_argument(
        "--check-measured",
        action="store_true",
        help="instead: take each OUT's held-out figures as a model's true rates (its real offsets, "
        "systematic ones included) and check the odds on --models held-out blocks of it",
    )
    args = parser.parse_args()
    if args.check:
        offsets = [float(x) for x in (args.offsets or "0,0.01,0.02,0.03,0.04").split(",")]
        print_calibration(args.out[0], offsets, args.models)
        return
    if args.check_measured:
        for out in args.out:
            true, said = check_measured(*load_figures(out), args.models)
            lo, hi = np.quantile(said[:, 0], [0.1, 0.9])
            print(
                f"{out}'s figures taken as a model's truth: true joint odds {true:.3f}; over {args.models} "
                f"held-out blocks the calibrated odds say {np.median(said[:, 0]):.3f} (10-90%: {lo:.3f}-"
                f"{hi:.3f}), the Jeffreys odds {np.median(said[:, 1]):.3f}"
            )
        return
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
        odds, spread = calibrated_pass_odds(figures, audit, draws=args.draws)
        exact = cell_pass_odds(figures, audit, draws=args.draws, exact=True)
        jeffreys = cell_pass_odds(figures, audit, draws=args.draws)
        joint, joint_exact = np.prod(list(odds.values())), np.prod(list(exact.values()))
        print(
            f"{out}: {len(odds)} pinned cells; chance that all pass on the tests' seeds {joint:.2f} "
            f"(spread beyond sampling {spread:.3f}; a model exact to its world: {joint_exact:.2f}; "
            f"the uncalibrated Jeffreys figure: {np.prod(list(jeffreys.values())):.2f})"
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
