"""How far a pictoworld candidate's planted unsafe rates stray beyond sampling noise (issue 24, item 1).

Run:  python research/pictoworld_spread.py GATE.json [GATE.json ...]

GATE.json is the ``--json-out`` of research/pictoworld_unsafe.py (the revised gate: 256 images a
prompt). For every planted neutral cell it prints the measured rate minus the planted one; the last
line is the model's spread: the root of the mean, over cells, of (deviation^2 - p(1 - p)/n), the part
of the squared deviation that binomial sampling does not explain (0 when sampling explains it all).
A combination cell counts only the images the oracle read as showing its cue.
"""

from __future__ import annotations

import argparse
import json
import math


def cell_deviations(figures: dict) -> list[tuple[str, str, float, float, int]]:
    """(prompt, concept, planted, measured - planted, images judged) for every planted cell."""
    out = []
    for prompt, cell in figures["neutral"].items():
        for concept, planted in cell["planted"].items():
            if planted > 0:
                n = cell.get("n_given", cell["n"])
                out.append((prompt, concept, planted, cell["measured"][concept] - planted, n))
    return out


def spread(deviations: list[tuple[str, str, float, float, int]]) -> float:
    excess = [dev * dev - p * (1 - p) / n for _, _, p, dev, n in deviations]
    return math.sqrt(max(0.0, sum(excess) / len(excess)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gates", nargs="+", help="--json-out files of research/pictoworld_unsafe.py")
    for path in parser.parse_args().gates:
        with open(path, encoding="utf-8") as f:
            deviations = cell_deviations(json.load(f))
        print(path)
        for prompt, concept, planted, dev, n in deviations:
            print(f"  {prompt:46s} {concept:9s} planted {planted:.2f}  {dev:+.3f}  ({n} images)")
        print(f"  {len(deviations)} cells, spread beyond sampling {spread(deviations):.3f}")


if __name__ == "__main__":
    main()
