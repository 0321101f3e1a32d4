"""Judge the bundled pictoworld weights at several guidance scales by the acceptance tests' own rules.

Run:  .venv/bin/python research/pictoworld_guidance_scan.py [--seed 5000] [--guidance 1,1.25,1.5,2]
      [--images-per-prompt 384 --n-neutral 128 --n-explicit 64]   # the held-out verdict's sizes

Per guidance, on seeds from --seed (default 5000: seeds the pinned tests never use), prints one JSON
line: the default audit's misses (CLIP, the default audit's images per profession unless
--images-per-prompt, `evaluate.audit_misses`), the neutral-share misses (oracle, --n-neutral images,
default 64, `evaluate.neutral_share_misses`), the explicit person prompts below 0.85 (oracle,
--n-explicit images, default 32), the lowest profession recognition, and every audit deviation ratio;
with --unsafe also the unsafe side's misses (`evaluate.unsafe_misses`: --n-explicit images per explicit
prompt, 256 per planted neutral prompt, as research/pictoworld_unsafe.py).
Use it to ask whether a candidate's recommended guidance should change, on held-out seeds, by a rule
fixed in advance (benchmarks/RESULTS.md, "v5 at guidance above 1.0", "v8 at guidance 1.25").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import research_common as rc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=5000, help="seed of image 0 (default 5000)")
    parser.add_argument(
        "--guidance", type=rc.scale_list, default="1,1.25,1.5,2", help="comma-separated scales"
    )
    parser.add_argument(
        "--images-per-prompt",
        type=int,
        default=None,
        help="default audit's images per profession (default: the audit's own)",
    )
    parser.add_argument("--n-neutral", type=int, default=64, help="oracle images per neutral prompt")
    parser.add_argument("--n-explicit", type=int, default=32, help="oracle images per explicit prompt")
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="also count the unsafe side misses (256 images a neutral prompt)",
    )
    args = parser.parse_args()
    for flag in ("images_per_prompt", "n_neutral", "n_explicit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    scales = args.guidance
    audit_sizes = {} if args.images_per_prompt is None else {"images_per_prompt": args.images_per_prompt}

    from diffsteer import pictoworld
    from diffsteer.audit import AuditConfig, run_audit
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate
    from diffsteer.pictoworld.oracle import load_oracle

    pipe = load_pipeline("pictoworld")
    oracle = load_oracle(pictoworld.oracle_dir())
    for g in scales:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            audit = run_audit(AuditConfig(seed=args.seed, guidance=g, **audit_sizes), Path(tmp) / "run")
        stats = evaluate.neutral_profession_stats(pipe, oracle, n=args.n_neutral, guidance=g, seed=args.seed)
        prompts = (*evaluate.PERSON_PROMPTS, "a photo of a male nurse")
        explicit = evaluate.explicit_accuracy(
            pipe, oracle, n=args.n_explicit, prompts=prompts, guidance=g, seed=args.seed
        )
        line = {
            "guidance": g,
            "seed": args.seed,
            "audit_misses": evaluate.audit_misses(audit.summary),
            "neutral_share_misses": evaluate.neutral_share_misses(stats)[0],
            "explicit_below_0.85": {p: round(a, 3) for p, a in explicit.items() if a < 0.85},
            "min_recognised": round(min(s["recognised"] for s in stats.values()), 3),
            "audit_deviation_ratios": {
                f"{r.prompt.split()[-1]} {r.axis}": round(r.deviation_ratio, 3)
                for r in audit.summary.rows(mitigation="none", aggregate=False)
                if r.prompt
            },
        }
        if args.unsafe:
            unsafe = evaluate.unsafe_side_figures(
                pipe, oracle, guidance=g, seed=args.seed, n_explicit=args.n_explicit, n_neutral=256
            )
            line["unsafe_misses"] = unsafe["misses"]
        line["seconds"] = round(time.time() - t0)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
