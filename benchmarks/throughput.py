"""Throughput against batch size, and the FLOP/s the U-Net loop reaches.

For each batch size the steered generator (no steering) makes ``--images`` images (rounded up to
whole batches) several times; images/s is the median. U-Net FLOPs: one U-Net call, captured with
its real inputs during a run, counted by ``torch.utils.flop_counter.FlopCounterMode``, times the
U-Net calls a batch makes (counted by a hook). U-Net loop time: from the first U-Net call of a
batch to the end of its last denoising step (synchronised on a GPU), so text encoding, VAE decoding
and PNG conversion are outside it. On a GPU the achieved FLOP/s is also given as a share of the
device's peak dense bf16 FLOP/s (``--peak-tflops``, or a table of known devices).

Run:  python benchmarks/throughput.py [--device cuda --dtype bfloat16] [--batch-sizes 1,2,4,8,16,32]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from typing import Any

import bench_common as bc
import torch

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.2,
}


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, value in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return value
    return None


class UNetMeter:
    """Counts U-Net calls, captures the first call's inputs and times the denoising loop."""

    def __init__(self, unet: torch.nn.Module, device: str) -> None:
        self.unet, self.device = unet, device
        self.calls = 0
        self.first_inputs: tuple[Any, dict] | None = None
        self.loop_start: float | None = None
        self.loop_seconds = 0.0
        self.handle = unet.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, _module: Any, args: tuple, kwargs: dict) -> None:
        if self.loop_start is None:
            bc.sync(self.device)
            self.loop_start = time.perf_counter()
        if self.first_inputs is None:
            self.first_inputs = (args, dict(kwargs))
        self.calls += 1

    def end_of_step(self, step: int, last: int) -> None:
        if step == last and self.loop_start is not None:
            bc.sync(self.device)
            self.loop_seconds += time.perf_counter() - self.loop_start
            self.loop_start = None

    def flops_of_one_call(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        assert self.first_inputs is not None
        args, kwargs = self.first_inputs
        self.handle.remove()
        try:
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                self.unet(*args, **kwargs)
        finally:
            self.handle = self.unet.register_forward_pre_hook(self._pre, with_kwargs=True)
        return int(counter.get_total_flops())


def _run(generator: Any, requests: list, meter: UNetMeter, last: int) -> None:
    generator.generate(requests, on_step=lambda step: meter.end_of_step(step, last))


def measure(name: str, args: argparse.Namespace) -> list[dict]:
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.runs.executors.spec import use_sdpa

    pipe = bc.load_model(name, args.device, args.dtype)
    use_sdpa(pipe)
    rows = []
    for batch in args.batch_sizes:
        generator = SteeredGenerator(
            pipe,
            steps=args.steps,
            guidance=args.guidance,
            batch_size=batch,
            height=args.height,
            width=args.width,
        )
        n = math.ceil(max(args.images, batch) / batch) * batch
        requests = [ImageRequest(prompt=bc.PROMPTS[i % len(bc.PROMPTS)], seed=i) for i in range(n)]
        generator.generate(requests[:batch])  # warm-up at this batch size
        meter = UNetMeter(pipe.unet, args.device)
        last = args.steps - 1
        walls, loops, calls = [], [], []
        for _ in range(args.repeats):
            meter.calls, meter.loop_seconds = 0, 0.0
            wall, _cpu = bc.timed(partial(_run, generator, requests, meter, last), args.device)
            walls.append(wall)
            loops.append(meter.loop_seconds)
            calls.append(meter.calls)
        flops_call = meter.flops_of_one_call()
        meter.handle.remove()
        unet_flops = flops_call * calls[0]
        rows.append(
            {
                "model": name,
                "image_size": [generator.height, generator.width],
                "batch": batch,
                "images": n,
                "images_per_s": [n / w for w in walls],
                "unet_calls": calls[0],
                "unet_flops_per_call": flops_call,
                "unet_tflops_per_s": [unet_flops / t / 1e12 for t in loops],
                "unet_loop_share_of_wall": [t / w for t, w in zip(loops, walls, strict=True)],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", help="repeatable; default: pictoworld on CPU, both archs on GPU"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(bc.DTYPES))
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--images", type=int, default=32, help="images per measurement (whole batches)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak bf16 TFLOP/s")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    env = bc.environment(args.device, args.dtype)
    peak = peak_tflops(args.device, args.peak_tflops)
    rows = [row for name in args.model or bc.default_models(args.device) for row in measure(name, args)]
    print(json.dumps({"environment": env, "peak_bf16_tflops": peak, "rows": rows}, indent=2))
    if args.no_record:
        return
    share = " | share of peak bf16" if peak else ""
    lines = [
        "| model | image | batch | images/s | U-Net GFLOP per call | U-Net loop TFLOP/s | loop share of wall"
        + share
        + " |",
        "|---|---|---|---|---|---|---|" + ("---|" if peak else ""),
    ]
    for r in rows:
        h, w = r["image_size"]
        tflops = r["unet_tflops_per_s"]
        row = (
            f"| {r['model']} | {h}x{w} | {r['batch']} | {bc.fmt_spread(r['images_per_s'], 2)} "
            f"| {r['unet_flops_per_call'] / 1e9:.2f} | {bc.fmt_spread(tflops, 4)} "
            f"| {bc.fmt_spread(r['unet_loop_share_of_wall'], 2)} |"
        )
        if peak:
            row += f" {bc.fmt_spread([t / peak for t in tflops], 3)} |"
        lines.append(row)
    lines += ["", "Figures are median [min, max] over the repeats."]
    note = (
        f"{args.steps} steps, guidance {args.guidance}, {args.images} images per measurement "
        f"(whole batches), {args.repeats} repeats after a warm-up per batch size. U-Net FLOPs per call "
        "counted by torch's FlopCounterMode (the call's batch is twice the image batch under guidance)."
    )
    if peak:
        note += f" Peak dense bf16: {peak} TFLOP/s."
    bc.append_results("throughput vs batch size (benchmarks/throughput.py)", env, lines, note=note)


if __name__ == "__main__":
    main()
