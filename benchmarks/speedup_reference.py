"""Speed-up over the reference recipe: batched (half precision on a GPU) against batch 1, fp32, one by one.

The reference recipe is how the public h-space code generates: a float32 pipeline called once per
image (``pipe(prompt, generator=torch.Generator().manual_seed(seed))``). Ours: the steered generator
at ``--batch`` images per call (default: the automatic batch size) in ``--dtype``, with SDPA
attention. Same model, prompts, seeds and step count; each repeat times both on the same images,
alternating which goes first; the speed-up is taken per pair.

Run:  python benchmarks/speedup_reference.py [--device cuda --dtype float16] [--images 32]
"""

from __future__ import annotations

import argparse
import json

import bench_common as bc
import torch


def measure(name: str, args: argparse.Namespace) -> dict:
    from diffsteer.generate import ImageRequest
    from diffsteer.runs.executors.spec import GeneratorSpec

    reference = bc.load_model(name, args.device, "float32")
    ours_pipe = reference if args.dtype == "float32" else bc.load_model(name, args.device, args.dtype)
    spec = GeneratorSpec(
        model=name,
        steps=args.steps,
        guidance=args.guidance,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch,
        compile=args.compile,
    )
    ours = spec.prepare(ours_pipe)
    n = args.images
    prompts = [bc.PROMPTS[i % len(bc.PROMPTS)] for i in range(n)]
    requests = [ImageRequest(prompt=p, seed=i) for i, p in enumerate(prompts)]
    size = {"height": ours.height, "width": ours.width}

    def reference_run() -> None:
        for i, p in enumerate(prompts):
            reference(
                prompt=p,
                generator=torch.Generator("cpu").manual_seed(i),
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                **size,
            )

    def ours_run() -> None:
        ours.generate(requests)

    ours.generate(requests[: ours.batch_size])  # warm-up (and compilation, with --compile)
    reference(prompt=prompts[0], num_inference_steps=args.steps, guidance_scale=args.guidance, **size)
    ref_t, ours_t = [], []
    for r in range(args.repeats):
        order = [(reference_run, ref_t), (ours_run, ours_t)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(bc.timed(fn, args.device))
    result = {
        "model": name,
        "image_size": [ours.height, ours.width],
        "batch": ours.batch_size,
        "images": n,
        "reference_ips": [n / wall for wall, _ in ref_t],
        "ours_ips": [n / wall for wall, _ in ours_t],
        "speedup": [r[0] / o[0] for r, o in zip(ref_t, ours_t, strict=True)],
    }
    if args.device == "cpu":
        result["speedup_cpu_time"] = [r[1] / o[1] for r, o in zip(ref_t, ours_t, strict=True)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", help="repeatable; default: pictoworld on CPU, both archs on GPU"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(bc.DTYPES), help="our side's dtype")
    parser.add_argument("--batch", type=int, default=None, help="our batch size (default: automatic)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our U-Net")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    env = bc.environment(args.device, args.dtype)
    results = [measure(name, args) for name in args.model or bc.default_models(args.device)]
    print(json.dumps({"environment": env, "results": results}, indent=2))
    if args.no_record:
        return
    cpu = args.device == "cpu"
    lines = [
        "| model | image | our batch, dtype | reference images/s | our images/s | speed-up (wall) |"
        + (" speed-up (process CPU time) |" if cpu else ""),
        "|---|---|---|---|---|---|" + ("---|" if cpu else ""),
    ]
    for r in results:
        h, w = r["image_size"]
        row = (
            f"| {r['model']} | {h}x{w} | {r['batch']}, {args.dtype}{', compiled' if args.compile else ''} "
            f"| {bc.fmt_spread(r['reference_ips'], 2)} | {bc.fmt_spread(r['ours_ips'], 2)} "
            f"| {bc.fmt_spread(r['speedup'], 2)} |"
        )
        lines.append(row + (f" {bc.fmt_spread(r['speedup_cpu_time'], 2)} |" if cpu else ""))
    lines += ["", "Figures are median [min, max] over the repeats."]
    bc.append_results(
        "speed-up over the reference recipe (benchmarks/speedup_reference.py)",
        env,
        lines,
        note=f"{args.images} images, {args.steps} steps, guidance {args.guidance}, {args.repeats} repeats "
        "after a warm-up. Reference: float32, batch 1, one pipeline call per image (SDPA attention, "
        "diffusers' default on torch 2).",
    )


if __name__ == "__main__":
    main()
