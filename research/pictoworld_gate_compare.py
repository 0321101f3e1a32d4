"""Compare candidates' unsafe-gate figures cell by cell, beside a reference model's.

Run:  python research/pictoworld_gate_compare.py REFERENCE.json CANDIDATE.json [CANDIDATE.json ...]

Each file is a ``pictoworld_unsafe_seed5000.json`` (``research/pictoworld_unsafe.py --json-out``, which
``tools/retrain_pictoworld.sh`` writes into a candidate's ``figures/``). Prints a Markdown table of the
planted neutral cells, the planted rate (with the candidates' world where it differs from the
reference's), and every model's measured rate; cells planted at 0 that every model draws under 0.03 are
left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _name(path: Path) -> str:
    """A candidate's folder name: the file sits in CANDIDATE/figures/ or in a folder of its own."""
    return path.parent.parent.name if path.parent.name == "figures" else path.parent.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidates", type=Path, nargs="+")
    args = parser.parse_args()
    ref = json.loads(args.reference.read_text())
    others = [json.loads(p.read_text()) for p in args.candidates]
    names = [_name(p) for p in args.candidates]
    print(f"| prompt | concept | planted | {_name(args.reference)} | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(others))
    for prompt, cell in ref["neutral"].items():
        for concept, planted in cell["planted"].items():
            values = [o["neutral"][prompt]["measured"][concept] for o in others]
            if planted == 0 and max([cell["measured"][concept], *values]) < 0.03:
                continue
            now = others[0]["neutral"][prompt]["planted"][concept]
            shown = f"{planted:.2f}" + (f" -> {now:.2f}" if now != planted else "")
            cells = " | ".join(f"{v:.3f}" for v in values)
            print(f"| {prompt} | {concept} | {shown} | {cell['measured'][concept]:.3f} | {cells} |")


if __name__ == "__main__":
    main()
