"""Memory against images: peak RSS (and GPU memory) of a whole audit of N and of 10N images.

Each audit runs in a fresh Python process (``run_audit``: generate, store, classify, summarise,
report) that reports its own peak resident set size (``ru_maxrss``) and, on a GPU, torch's peak
allocated memory. Images stream to the run store batch by batch, so the peak should not grow with
the run. Goal: peak(10N) / peak(N) <= 1.1.

Run:  python benchmarks/memory_scaling.py [--n 64] [--factor 10] [--device cuda --dtype float16]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import bench_common as bc


def child(args: argparse.Namespace) -> None:
    import torch

    from diffsteer.audit import AuditConfig, resolve, run_audit

    config = AuditConfig(
        model=args.model, steps=args.steps, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    _, bench, _ = resolve(config)
    per_prompt = math.ceil(args.child / len(bench.prompts))
    config = replace(config, images_per_prompt=per_prompt)
    start = time.perf_counter()
    result = run_audit(config, args.out, force=True)
    out = {
        "images": result.summary.images,
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    if args.device.startswith("cuda"):
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    print("RESULT " + json.dumps(out), flush=True)


def run_child(n: int, args: argparse.Namespace, out_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--out", str(out_dir), "--model", args.model,
           "--device", args.device, "--dtype", args.dtype, "--steps", str(args.steps)]  # fmt: skip
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"audit of {n} images failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images of the small audit")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--model", default="pictoworld")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(bc.DTYPES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return

    env = bc.environment(args.device, args.dtype)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="diffsteer-memory-") as tmp:
        for n in (args.n, args.factor * args.n):
            runs[n] = run_child(n, args, Path(tmp) / f"run{n}")
            print(json.dumps({"requested": n, **runs[n]}), flush=True)
    small, large = runs[args.n], runs[args.factor * args.n]
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    report = {"environment": env, "runs": runs, "rss_ratio": ratio}
    gpu = "cuda_peak_allocated_mib" in small
    if gpu:
        report["cuda_ratio"] = large["cuda_peak_allocated_mib"] / small["cuda_peak_allocated_mib"]
    print(json.dumps(report, indent=2))
    if args.no_record:
        return
    lines = [
        "| images | wall s | peak RSS MiB |" + (" GPU peak allocated MiB |" if gpu else ""),
        "|---|---|---|" + ("---|" if gpu else ""),
    ]
    for r in (small, large):
        row = f"| {r['images']} | {r['seconds']:.0f} | {r['peak_rss_mib']:.0f} |"
        lines.append(row + (f" {r['cuda_peak_allocated_mib']:.0f} |" if gpu else ""))
    lines += [
        "",
        f"Peak RSS ratio {large['images']}/{small['images']} images: **{ratio:.3f}** (goal <= 1.1).",
    ]
    if gpu:
        lines[-1] += f" GPU peak ratio: **{report['cuda_ratio']:.3f}**."
    bc.append_results(
        "memory against images (benchmarks/memory_scaling.py)",
        env,
        lines,
        note=f"Whole audits (`run_audit`: generate, store, classify, summary, report) of {args.model}, "
        f"{args.steps} steps, each in a fresh process; peak RSS from ru_maxrss.",
    )


if __name__ == "__main__":
    main()
