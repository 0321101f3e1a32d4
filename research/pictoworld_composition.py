"""How well a pictoworld model follows a setting when the prompt also names a gender or skin tone.

Run:  .venv/bin/python research/pictoworld_composition.py [MODEL] [--seed 900000] [--n 64]
      [--guidance 1.25] [--professions hairdresser,lawyer,chef,painter] [--json-out FILE]

The world's captions name a setting only with a bare profession ("a photo of a chef in a non-western
setting") and never together with a gender or skin adjective, so "a photo of a female chef in a
non-western setting" asks for a combination the model never read: an alignment weakness of the kind
DPOK fine-tunes against (issue 26). Per prompt, on --n images from --seed (oracle): the share drawn
in the asked setting, the share with the asked adjective, both, and profession recognition; then the
means per cue kind and setting. MODEL is a folder with pipeline/ and oracle/ (default: the bundled
weights). Seeds 900000+ by default: not the held-out seeds (5000000+) a fine-tune is judged on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _adjectives() -> dict[str, tuple[str, str]]:
    """The world's caption adjectives with the oracle (head, class) each asks for."""
    from diffsteer.pictoworld import world

    out = {a: ("gender", g) for g, a in world.GENDER_ADJECTIVE.items()}
    return out | {a: ("skin_tone", s) for s, a in world.SKIN_ADJECTIVE.items()}


def composed_prompts(professions: list[str]) -> dict[str, dict]:
    """Every adjective x setting prompt of each profession, and the bare setting prompts beside them."""
    from diffsteer.pictoworld import world

    prompts = {}
    for prof in professions:
        for adjective, (axis, cls) in _adjectives().items():
            for setting in world.CULTURES:
                text = f"a photo of a {adjective} {prof} in a {setting} setting"
                prompts[text] = {"profession": prof, "axis": axis, "class": cls, "culture": setting}
        for setting in world.CULTURES:
            prompts[f"a photo of a {prof} in a {setting} setting"] = {
                "profession": prof,
                "axis": None,
                "class": None,
                "culture": setting,
            }
    return prompts


def measure(model: Path, professions: list[str], n: int, seed: int, guidance: float) -> dict:
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate, world
    from diffsteer.pictoworld.oracle import load_oracle, predict

    pipe = load_pipeline(str(model / "pipeline"))
    oracle = load_oracle(model / "oracle")
    prompts = composed_prompts(professions)
    images = evaluate.generate_images(pipe, list(prompts), n, seed=seed, guidance=guidance)
    rows = {}
    for text, asked in prompts.items():
        labels = predict(oracle, images[text])
        setting = np.array([c == asked["culture"] for c in labels["culture"]])
        if asked["axis"] is None:
            adjective = np.ones_like(setting)
        else:
            adjective = np.array([c == asked["class"] for c in labels[asked["axis"]]])
        rows[text] = asked | {
            "n": int(len(setting)),
            "setting": float(setting.mean()),
            "adjective": float(adjective.mean()),
            "both": float((setting & adjective).mean()),
            "recognised": float(np.mean([p == asked["profession"] for p in labels["profession"]])),
        }
    means = {}
    for axis in ("gender", "skin_tone", None):
        for setting in world.CULTURES:
            sel = [r for r in rows.values() if r["axis"] == axis and r["culture"] == setting]
            means[f"{axis or 'bare'} / {setting}"] = {
                k: round(float(np.mean([r[k] for r in sel])), 3)
                for k in ("setting", "adjective", "both", "recognised")
            }
    return {"model": str(model), "seed": seed, "guidance": guidance, "n": n, "prompts": rows, "means": means}


def main() -> None:
    from diffsteer import pictoworld

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=pictoworld.weights_dir())
    parser.add_argument("--seed", type=int, default=900000)
    parser.add_argument("--n", type=int, default=64, help="images per prompt")
    parser.add_argument("--guidance", type=float, default=pictoworld.RECOMMENDED_GUIDANCE)
    parser.add_argument("--professions", default="hairdresser,lawyer,chef,painter")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    professions = [p.strip() for p in args.professions.split(",") if p.strip()]
    unknown = sorted(set(professions) - set(pictoworld.PROFESSIONS))
    if args.n < 1:
        parser.exit(2, f"--n {args.n}: at least 1 image a prompt\n")
    if unknown or not professions:
        parser.exit(2, f"--professions: not pictoworld professions: {', '.join(unknown) or '(none)'}\n")
    if not (args.model / "pipeline").is_dir() or not (args.model / "oracle").is_dir():
        parser.exit(2, f"{args.model}: not a pictoworld folder (needs pipeline/ and oracle/)\n")
    figures = measure(args.model, professions, args.n, args.seed, args.guidance)
    print(f"model {figures['model']}, guidance {args.guidance:g}, seeds {args.seed}+, {args.n} images each")
    columns = ("setting", "adjective", "both", "recognised")
    print(f"| prompt | {' | '.join(columns)} |\n|---|---|---|---|---|")
    for text, r in figures["prompts"].items():
        print(f"| {text} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |")
    print(f"\n| cue / setting | {' | '.join(columns)} |\n|---|---|---|---|---|")
    for key, m in figures["means"].items():
        print(f"| {key} | " + " | ".join(f"{m[c]:.3f}" for c in columns) + " |")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
