"""Steering overhead: images/s of the steered generator with every steering active, over plain diffusers.

Both sides generate the same batch of prompts with the same model, batch size, steps, guidance and
per-image CPU generators. Plain: ``pipe(prompt=[...], generator=[...], num_inference_steps,
guidance_scale)``. Steered: ``SteeredGenerator.generate`` with, on every image, a random h-space
vector (the steered block's output shape), a noise offset and a prompt-embedding offset. Runs are
interleaved (plain, steered, steered, plain, ...) so drift in machine speed hits both sides alike;
the ratio is taken per pair. Goal: ratio >= 0.97.

Run:  python benchmarks/steering_overhead.py [--device cuda] [--dtype float16] [--model sd15-arch]
"""

from __future__ import annotations

import argparse
import json

import bench_common as bc
import torch


def measure(name: str, args: argparse.Namespace) -> dict:
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.runs.executors.spec import use_sdpa

    pipe = bc.load_model(name, args.device, args.dtype)
    use_sdpa(pipe)
    steered = SteeredGenerator(
        pipe,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch,
        height=args.height,
        width=args.width,
    )
    prompts = [bc.PROMPTS[i % len(bc.PROMPTS)] for i in range(args.batch)]
    seeds = list(range(args.batch))
    g = torch.Generator("cpu").manual_seed(1234)
    seq, dim = steered.prompt_embeds_shape
    requests = [
        ImageRequest(
            prompt=p,
            seed=s,
            hspace=torch.randn(steered.hspace_shape, generator=g),
            noise_offset=0.1 * torch.randn(steered.latent_shape, generator=g),
            prompt_embeds_offset=0.01 * torch.randn((dim,), generator=g),
        )
        for p, s in zip(prompts, seeds, strict=True)
    ]

    def plain() -> None:
        pipe(
            prompt=prompts,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            height=steered.height,
            width=steered.width,
        )

    def steer() -> None:
        steered.generate(requests)

    plain(), steer()  # warm-up: allocator, kernels, lazy imports
    plain_t, steered_t = [], []
    for r in range(args.repeats):
        order = [(plain, plain_t), (steer, steered_t)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(bc.timed(fn, args.device))
    result = {
        "model": name,
        "image_size": [steered.height, steered.width],
        "hspace_shape": list(steered.hspace_shape),
        "plain_ips": [args.batch / wall for wall, _ in plain_t],
        "steered_ips": [args.batch / wall for wall, _ in steered_t],
        # per interleaved pair: steered images/s over plain images/s = plain time / steered time
        "ratio": [p[0] / s[0] for p, s in zip(plain_t, steered_t, strict=True)],
    }
    if args.device == "cpu":
        result["ratio_cpu_time"] = [p[1] / s[1] for p, s in zip(plain_t, steered_t, strict=True)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="repeatable; default: pictoworld on CPU, "
                        "sd15-arch and sdxl-arch on a GPU")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(bc.DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    env = bc.environment(args.device, args.dtype)
    results = [measure(name, args) for name in args.model or bc.default_models(args.device)]
    print(json.dumps({"environment": env, "results": results}, indent=2))
    if args.no_record:
        return
    cpu = args.device == "cpu"
    lines = [
        "| model | image | plain images/s | steered images/s | ratio steered/plain (wall) |"
        + (" ratio (process CPU time) |" if cpu else ""),
        "|---|---|---|---|---|" + ("---|" if cpu else ""),
    ]
    for r in results:
        h, w = r["image_size"]
        row = (
            f"| {r['model']} | {h}x{w} | {bc.fmt_spread(r['plain_ips'], 2)} "
            f"| {bc.fmt_spread(r['steered_ips'], 2)} | {bc.fmt_spread(r['ratio'])} |"
        )
        lines.append(row + (f" {bc.fmt_spread(r['ratio_cpu_time'])} |" if cpu else ""))
    lines.append("")
    lines.append("Figures are median [min, max] over the repeats.")
    bc.append_results(
        "steering overhead (benchmarks/steering_overhead.py)",
        env,
        lines,
        note=f"Batch {args.batch}, {args.steps} steps, guidance {args.guidance}, {args.repeats} interleaved "
        "repeats after a warm-up; steered = h-space + noise offset + prompt-embedding offset on every image. "
        "Goal: ratio >= 0.97.",
    )


if __name__ == "__main__":
    main()
