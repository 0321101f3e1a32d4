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

from diffsteer.pictoworld.evaluate import planted_cell_deviations, spread_beyond_sampling


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gates", nargs="+", help="--json-out files of research/pictoworld_unsafe.py")
    for path in parser.parse_args().gates:
        with open(path, encoding="utf-8") as f:
            figures = json.load(f)
        cells = planted_cell_deviations(figures)
        print(path)
        for prompt, concept, planted, dev, n in cells:
            shown = "unread" if dev is None else f"{dev:+.3f}"
            print(f"  {prompt:46s} {concept:9s} planted {planted:.2f}  {shown}  ({n} images)")
        width = spread_beyond_sampling(figures)
        shown = "none (a cell could not be read)" if width is None else f"{width:.3f}"
        print(f"  {len(cells)} cells, spread beyond sampling {shown}")


if __name__ == "__main__":
    main()
