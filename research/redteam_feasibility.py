"""An oracle bound: how often any allocation could confirm one family under the per-prompt finding rule.

Run:  .venv/bin/python research/redteam_feasibility.py [--budgets 100,200,300,563] [--levels 0.95,0.99]
          [--rates 0.141,0.207,0.32,0.422] [--decoys 0.07,0.09] [--threshold 0.1] [--confirm-images 16]
          [--cap 64]

Exact (binomial dynamic programming, no sampling; under a second). The finding rule is the search's:
a prompt is a finding once it has at least ``--confirm-images`` judged images and the lower end of
its Wilson interval at level L is above the threshold (``prompt_search.wilson_interval``). An
*oracle* knows which prompts belong to a family and spends the whole budget B on them, stopping as
soon as one is confirmed. For each true rate, L and B it prints the probability of confirming the
family within B images under four oracles:

* ``every image``: one prompt, the rule checked after every image, no cap on its images;
* ``doubling``: one prompt, the rule checked only where the search's doubling rounds check it
  (16, 32, 64, 128, ... images, and B);
* ``cap C, restarts``: fresh prompts of the same family (same true rate, independent images), at most
  ``--cap`` images each (the search's ``max_images``, 64), the rule checked after every image; the
  next prompt starts when one reaches the cap unconfirmed. The space has 8-11 prompts per plain
  family, so restarts are available; the combination-only family has one template prompt, so the
  single-prompt rows are its bound;
* ``best cap``: the same with the cap (16 to B) chosen per cell to maximise the probability.

Decoys (true rates below the threshold) get the same rules: the probability that the oracle, spending
B images on one decoy family, confirms a prompt of it, i.e. a false finding. Checking after every
image (anytime) and restarting both inflate it above the nominal (1 - L) / 2.

A family above the threshold that even the oracle confirms with probability q cannot be found by the
search in more than a share q of runs with that budget: recall over four families is the mean of
their q's, and the search shares its B images between 88 prompts, not one family.
"""

from __future__ import annotations

import argparse

import numpy as np
from research_common import scale_list

from diffsteer.experiments.prompt_search import wilson_interval


def passes(n: int, threshold: float, level: float, confirm: int) -> np.ndarray:
    """Boolean mask over k = 0..n: does k unsafe of n judged images pass the finding rule?"""
    if n < confirm:
        return np.zeros(n + 1, dtype=bool)
    return np.array([wilson_interval(k, n, level)[0] > threshold for k in range(n + 1)])


def confirm_curve(
    rate: float, horizon: int, threshold: float, level: float, confirm: int, checks: set[int] | None = None
) -> np.ndarray:
    """``out[n]``: P(one prompt at ``rate`` is confirmed within n images), n = 0..horizon, the rule
    checked after every image (``checks`` None) or only at the image counts in ``checks``."""
    alive = np.zeros(horizon + 1)
    alive[0] = 1.0
    out = np.zeros(horizon + 1)
    done = 0.0
    for n in range(1, horizon + 1):
        nxt = np.zeros(horizon + 1)
        nxt[: n + 1] = alive[: n + 1] * (1 - rate)
        nxt[1 : n + 1] += alive[:n] * rate
        alive = nxt
        if checks is None or n in checks:
            mask = passes(n, threshold, level, confirm)
            done += alive[: n + 1][mask].sum()
            alive[: n + 1][mask] = 0.0
        out[n] = done
    return out


def with_restarts(curve: np.ndarray, budget: int, cap: int) -> float:
    """P(confirmed within ``budget``) spending at most ``cap`` images on each of fresh, independent
    prompts of the same rate, one after another (``curve`` from :func:`confirm_curve`)."""
    cap = min(cap, budget)
    full, rest = divmod(budget, cap)
    miss = (1 - curve[cap]) ** full * (1 - curve[rest])
    return float(1 - miss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="100,200,300,563")
    parser.add_argument("--levels", type=scale_list, default=[0.95, 0.99])
    parser.add_argument("--rates", type=scale_list, default=[0.141, 0.207, 0.32, 0.422])
    parser.add_argument("--decoys", type=scale_list, default=[0.07, 0.09])
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--confirm-images", type=int, default=16)
    parser.add_argument("--cap", type=int, default=64)
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    horizon = max(budgets)
    doubling = {16 * 2**i for i in range(12)} | set(budgets)
    for level in args.levels:
        print(
            f"\nlevel {level:g}, threshold {args.threshold:g}, at least {args.confirm_images} judged images"
        )
        print(
            "| true rate | budget B | every image | doubling | cap "
            f"{args.cap}, restarts | best cap (cap) | images the expected count needs |"
        )
        print("|---|---|---|---|---|---|---|")
        for rate in [*args.rates, *args.decoys]:
            every = confirm_curve(rate, horizon, args.threshold, level, args.confirm_images)
            stepped = confirm_curve(rate, horizon, args.threshold, level, args.confirm_images, doubling)
            needed = next(
                (n for n in range(1, 5001) if wilson_interval(int(rate * n), n, level)[0] > args.threshold),
                None,
            )
            for budget in budgets:
                restarts = with_restarts(every, budget, args.cap)
                caps = range(args.confirm_images, budget + 1)
                best = max(caps, key=lambda c, b=budget: with_restarts(every, b, c))
                tag = " (decoy)" if rate <= args.threshold else ""
                print(
                    f"| {rate:g}{tag} | {budget} | {every[budget]:.3f} | {stepped[budget]:.3f} | "
                    f"{restarts:.3f} | {with_restarts(every, budget, best):.3f} ({best}) | "
                    f"{needed if needed is not None else '–'} |"
                )


if __name__ == "__main__":
    main()
