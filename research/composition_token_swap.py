"""Where the composed-prompt weakness lives: in the text encoder's reading of the setting words, or in
the U-Net's reading of them.

Run:  .venv/bin/python research/composition_token_swap.py [MODEL] [--seed 910000] [--n 32]
      [--professions hairdresser,lawyer,chef,painter] [--json-out FILE]

Asked for "a photo of a female chef in a non-western setting", the bundled v9 draws the setting about
half the time, against 0.98 for the bare "a photo of a chef in a non-western setting" (RESULTS.md,
"does the composed-prompt weakness apply?"). The text encoder reads each word in its context, so the
words "in a non-western setting" reach the U-Net as different vectors in the two prompts. This script
builds the composed prompt's text embeddings, swaps in the bare prompt's vectors for some positions,
and draws images from each variant on the same seeds (oracle):

- ``composed``: the composed prompt as the model reads it;
- ``setting``: the setting words' vectors ("in a non-western setting") taken from the bare prompt;
- ``setting+tail``: those and every position after them (end and padding tokens, which the U-Net also
  attends to) taken from the bare prompt, shifted by the adjective's one token;
- ``bare``: the bare prompt itself, for reference.

If the swaps bring the setting close to the bare prompt's while the adjective holds, the weakness is
how the text encoder contextualises the setting beside an adjective (a fix on the text side would carry
across professions); if not, it is how the U-Net reads the whole sentence. Seeds 910000+ by default: no
fine-tune is judged on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("composed", "setting", "setting+tail", "bare")


def _hidden(pipe, text: str) -> tuple[torch.Tensor, list[int]]:
    tok = pipe.tokenizer(
        text, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        states = pipe.text_encoder(tok.input_ids).last_hidden_state[0]
    return states, tok.input_ids[0].tolist()


def variant_embeddings(pipe, composed: str, bare: str, setting_words: str) -> dict[str, torch.Tensor]:
    """The four variants' prompt embeddings (1, length, width) for one composed prompt."""
    c_states, c_ids = _hidden(pipe, composed)
    b_states, b_ids = _hidden(pipe, bare)
    setting_ids = pipe.tokenizer(setting_words, add_special_tokens=False).input_ids

    def start(ids: list[int]) -> int:
        for i in range(len(ids) - len(setting_ids) + 1):
            if ids[i : i + len(setting_ids)] == setting_ids:
                return i
        raise ValueError(f"{setting_words!r} not found in the tokens of a prompt")

    c0, b0, width = start(c_ids), start(b_ids), len(setting_ids)
    swapped = c_states.clone()
    swapped[c0 : c0 + width] = b_states[b0 : b0 + width]
    tail = c_states.clone()
    length = len(c_ids) - c0  # the bare prompt is one token shorter: its last position is repeated
    source = [min(b0 + i, len(b_ids) - 1) for i in range(length)]
    tail[c0:] = b_states[source]
    return {
        "composed": c_states[None],
        "setting": swapped[None],
        "setting+tail": tail[None],
        "bare": b_states[None],
    }


def draw(pipe, embeds: torch.Tensor, negative: torch.Tensor, n: int, seed: int, guidance: float, steps: int):
    generators = [torch.Generator().manual_seed(seed + k) for k in range(n)]
    out = pipe(
        prompt_embeds=embeds.repeat(n, 1, 1), negative_prompt_embeds=negative.repeat(n, 1, 1),
        guidance_scale=guidance, num_inference_steps=steps, generator=generators, output_type="np",
    )  # fmt: skip
    return (out.images * 255).round().astype(np.uint8)


def measure(model: Path, professions: list[str], n: int, seed: int, guidance: float, steps: int) -> dict:
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import world
    from diffsteer.pictoworld.oracle import load_oracle, predict

    pipe = load_pipeline(str(model / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    oracle = load_oracle(model / "oracle")
    negative, _ = _hidden(pipe, "")
    setting = "non-western"
    words = f"in a {setting} setting"
    rows = []
    for prof in professions:
        bare = f"a photo of a {prof} {words}"
        for gender, adjective in world.GENDER_ADJECTIVE.items():
            composed = f"a photo of a {adjective} {prof} {words}"
            embeds = variant_embeddings(pipe, composed, bare, words)
            for name in VARIANTS:
                labels = predict(oracle, draw(pipe, embeds[name], negative[None], n, seed, guidance, steps))
                rows.append({
                    "profession": prof, "gender": gender, "variant": name, "n": n,
                    "setting": float(np.mean([c == setting for c in labels["culture"]])),
                    "adjective": float(np.mean([g == gender for g in labels["gender"]])),
                    "recognised": float(np.mean([p == prof for p in labels["profession"]])),
                })  # fmt: skip
    means = {
        name: {
            k: round(float(np.mean([r[k] for r in rows if r["variant"] == name])), 3)
            for k in ("setting", "adjective", "recognised")
        }
        for name in VARIANTS
    }
    return {"model": str(model), "seed": seed, "n": n, "guidance": guidance, "rows": rows, "means": means}


def main() -> None:
    from diffsteer import pictoworld

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=pictoworld.weights_dir())
    parser.add_argument("--seed", type=int, default=910000)
    parser.add_argument("--n", type=int, default=32, help="images per variant and prompt")
    parser.add_argument("--guidance", type=float, default=pictoworld.RECOMMENDED_GUIDANCE)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--professions", default="hairdresser,lawyer,chef,painter")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    professions = [p.strip() for p in args.professions.split(",") if p.strip()]
    unknown = sorted(set(professions) - set(pictoworld.PROFESSIONS))
    if unknown or not professions:
        parser.exit(2, f"--professions: not pictoworld professions: {', '.join(unknown) or '(none)'}\n")
    if not (args.model / "pipeline").is_dir() or not (args.model / "oracle").is_dir():
        parser.exit(2, f"{args.model}: not a pictoworld folder (needs pipeline/ and oracle/)\n")
    figures = measure(args.model, professions, args.n, args.seed, args.guidance, args.steps)
    print(f"model {figures['model']}, guidance {args.guidance:g}, seeds {args.seed}+, {args.n} images each")
    print("| profession | gender | " + " | ".join(VARIANTS) + " |\n|---|---|" + "---|" * len(VARIANTS))
    for prof in professions:
        for gender in pictoworld.world.GENDER_ADJECTIVE:
            rows = [r for r in figures["rows"] if r["profession"] == prof and r["gender"] == gender]
            cells = {r["variant"]: r for r in rows}
            shown = [f"{cells[v]['setting']:.2f} / {cells[v]['adjective']:.2f}" for v in VARIANTS]
            print(f"| {prof} | {gender} | " + " | ".join(shown) + " |")
    print("\n(cells: non-western setting / asked gender; the bare variant asks no gender)\n")
    print("| variant | setting | adjective | recognised |\n|---|---|---|---|")
    for name, m in figures["means"].items():
        print(f"| {name} | {m['setting']:.3f} | {m['adjective']:.3f} | {m['recognised']:.3f} |")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
