"""Train several pictoworld seeds at once on one device, gate each, and pack the most promising.

Run:  python tools/train_pictoworld_seeds.py OUT --seeds 2-9 [--device cuda] [--deadline-s 420]
          [--n-images 44000 --unet-steps 13000] [--unet-channels 48,96] [--vae-from FOLDER]
          [--pack DIR] [--keep 8]

Why: a candidate's per-cell offsets are a lottery over training seeds (its VAE's, RESULTS.md "does the
VAE set a training seed's offsets?"), and on 2 CPU cores one seed takes 85 minutes. A GPU machine is lent
for minutes at a time, so this trains one process per seed side by side (``train_pictoworld(...,
device=)``) and keeps within a wall-clock deadline: once every process is in its U-Net stage and the
measured pace says they would not all finish, the least advanced are stopped (their folders removed),
which hands their share of the device to the rest. Each finished candidate then gets the revised unsafe
gate on seeds 5000+ (research/pictoworld_unsafe.py at guidance 1.0, 256 images a planted prompt, in
OUT/SEED/figures/gate_seed5000.json), and the candidates are ranked by gate misses, then by their spread
beyond sampling (``evaluate.spread_beyond_sampling``, which research/pictoworld_spread.py prints).
``--pack DIR`` tars the best, as many as the device tool brings back (8 files, 64 MiB), a few per tar,
beside ``summary.json``; a gate that fails or runs late leaves its candidate packed after the gated ones.
``--vae-from FOLDER`` gives every seed that trained folder's VAE (``train_pictoworld(vae_from=)``), so the
seeds then differ in their U-Net and text encoder only (RESULTS.md: the VAE sets a candidate's offsets).

What comes next is the held-out verdict and the pass odds of tools/retrain_pictoworld.sh, on the CPU
machine, for the best of them; nothing here decides an adoption. Every stage draws its randomness on the
CPU, so a seed trained here is the seed a CPU run would train, up to rounding.

Exit status: 0 when at least one candidate finished, 1 when none did, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATE_SEED = 5000


def parse_seeds(text: str) -> list[int]:
    """``"2-5"`` -> [2, 3, 4, 5]; ``"2,7"`` -> [2, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give seeds as 2-9 or 2,3,5") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: give distinct seeds of 0 or more")
    return seeds


@dataclass
class Pace:
    """One running seed's U-Net progress: steps done of ``total``, at ``rate`` steps a second."""

    seed: int
    done: int
    total: int
    rate: float


def seeds_to_stop(paces: list[Pace], seconds_left: float) -> list[int]:
    """The seeds to stop so that the others' U-Net stages end within ``seconds_left``.

    The device is taken as a fixed pace shared by the processes (a GPU running small kernels for several
    processes in turns), so stopping one hands its pace to the rest. The least advanced go first: they
    free the most remaining work. One seed is always kept.
    """
    running = sorted(paces, key=lambda p: p.done, reverse=True)
    stop: list[int] = []
    while len(running) > 1:
        pace = sum(p.rate for p in paces)  # the whole device's, whoever holds it
        remaining = sum(p.total - p.done for p in running)
        if pace > 0 and remaining / pace <= seconds_left:
            break
        stop.append(running.pop().seed)
    return stop


def _train_one(seed: int, out: str, overrides: dict, device: str, threads: int, step, command: str) -> None:
    import torch

    from diffsteer.pictoworld.train import config_from_preset, train_pictoworld

    torch.set_num_threads(threads)
    vae_from = overrides.pop("vae_from")
    cfg = config_from_preset(overrides.pop("preset"), seed=seed, **overrides)

    def progress(stage: str, done: int, total: int, loss: float) -> None:
        if stage == "unet":
            step.value = done

    train_pictoworld(out, cfg, command=command, progress=progress, device=device, vae_from=vae_from)


def train_seeds(args, log) -> list[int]:
    """Train ``args.seeds`` side by side into OUT/SEED; returns the seeds that finished."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    threads = max(1, (os.cpu_count() or 2) // len(args.seeds))
    overrides = {
        "preset": args.preset,
        "n_images": args.n_images,
        "unet_steps": args.unet_steps,
        "contrast_rate": args.contrast_rate,
    }
    if args.unet_channels:
        from diffsteer.pictoworld.train import parse_unet_channels

        overrides["unet_channels"] = parse_unet_channels(args.unet_channels)
    from diffsteer.pictoworld.train import config_from_preset

    total = config_from_preset(**overrides).unet_steps
    overrides["vae_from"] = args.vae_from
    jobs = {}
    for seed in args.seeds:
        step = ctx.Value("i", 0)
        command = f"tools/train_pictoworld_seeds.py --seeds {seed} --device {args.device}"
        command += f" --vae-from {args.vae_from}" if args.vae_from else ""
        proc = ctx.Process(
            target=_train_one,
            args=(seed, str(args.out / str(seed)), dict(overrides), args.device, threads, step, command),
        )
        proc.start()
        jobs[seed] = (proc, step, [])  # [] collects (time, step) readings
    log(f"training seeds {args.seeds} on {args.device}, {threads} threads each, {total} U-Net steps")
    start, stopped, judged_from = args.started, [], 0.0  # one clock for the deadline, gates included
    while any(proc.is_alive() for proc, _, _ in jobs.values()):
        time.sleep(args.poll_s)
        now = time.time()
        paces = []
        for seed, (proc, step, readings) in jobs.items():
            if proc.is_alive() and seed not in stopped:
                readings.append((now, step.value))
                # the pace since the last stop (or the U-Net's start), so that a stop's freed share counts
                first = next(((t, s) for t, s in readings if s > 0 and t >= judged_from), None)
                if first is not None and now - first[0] >= args.poll_s:
                    rate = (step.value - first[1]) / (now - first[0])
                    paces.append(Pace(seed, step.value, total, rate))
        alive = [s for s, (p, _, _) in jobs.items() if p.is_alive() and s not in stopped]
        log(f"{now - start:5.0f}s  U-Net steps " + ", ".join(f"{s}: {jobs[s][1].value}" for s in alive))
        if now - start > args.deadline_s:  # past the deadline: what is unfinished is lost either way
            for seed in alive:
                jobs[seed][0].terminate()
                stopped.append(seed)
                log(f"stopped seed {seed} at step {jobs[seed][1].value}: the deadline has passed")
            continue
        if len(paces) == len(alive) and paces:  # judge only once every process is in its U-Net stage
            left = args.deadline_s - args.reserve_s - (now - start)
            for seed in seeds_to_stop(paces, left):
                jobs[seed][0].terminate()
                stopped.append(seed)
                judged_from = now
                log(f"stopped seed {seed} at step {jobs[seed][1].value}: the rest would not finish in time")
    finished = []
    for seed, (proc, _, _) in jobs.items():
        proc.join()
        if proc.exitcode == 0 and (args.out / str(seed) / "training_record.json").exists():
            finished.append(seed)
        else:
            shutil.rmtree(args.out / str(seed), ignore_errors=True)  # no half-made candidate is left
            if seed not in stopped:
                log(f"seed {seed} failed (exit {proc.exitcode})")
    log(f"trained {finished} in {time.time() - start:.0f}s")
    return finished


def gate_seeds(args, seeds: list[int], log) -> dict[int, dict]:
    """The revised unsafe gate for each seed, side by side; returns {seed: {"misses", "spread"}}. A gate
    still running past the deadline (with a minute's grace) is stopped and its seed left ungated."""
    from diffsteer.pictoworld.evaluate import spread_beyond_sampling

    procs = {}
    for seed in seeds:
        figures = args.out / str(seed) / "figures"
        figures.mkdir(exist_ok=True)
        cmd = [sys.executable, str(ROOT / "research" / "pictoworld_unsafe.py"), str(args.out / str(seed))]
        cmd += ["--seed", str(GATE_SEED), "--neutral-guidance", "1.0", "--device", args.device]
        cmd += ["--n-explicit", str(args.gate_explicit), "--n-neutral", str(args.gate_neutral)]
        cmd += ["--json-out", str(figures / f"gate_seed{GATE_SEED}.json")]
        with open(figures / f"gate_seed{GATE_SEED}.txt", "w") as text:
            procs[seed] = subprocess.Popen(cmd, stdout=text, stderr=subprocess.STDOUT)
    gates = {}
    for seed, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, args.deadline_s + 60 - (time.time() - args.started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            log(f"seed {seed}: the gate ran past the deadline and was stopped")
            continue
        if proc.returncode != 0:
            log(f"seed {seed}: the gate failed (exit {proc.returncode}), see {seed}/figures/")
            continue
        figures = json.loads((args.out / str(seed) / "figures" / f"gate_seed{GATE_SEED}.json").read_text())
        # None: a cell with nothing to read (no image showed its cue); such a candidate ranks last
        width = spread_beyond_sampling(figures)
        width = None if width is None else round(width, 4)
        gates[seed] = {"misses": figures["misses"], "spread": width}
        log(f"seed {seed}: {len(figures['misses'])} gate misses, spread beyond sampling {width}")
    return gates


def rank(gates: dict[int, dict]) -> list[int]:
    """Fewest gate misses first, then the smallest spread beyond sampling."""

    def key(seed: int) -> tuple:
        width = gates[seed]["spread"]
        return len(gates[seed]["misses"]), float("inf") if width is None else width, seed

    return sorted(gates, key=key)


# what the device tool brings back: 8 files (two go to summary.json and log.txt), 16 MiB each, 64 MiB in all
PACK_FILES, PACK_FILE_BYTES, PACK_TOTAL_BYTES = 6, 15_000_000, 60_000_000


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def pack_groups(sizes: dict[int, int]) -> list[list[int]]:
    """The candidates (seed: bytes, best first) that fit the limits above, as a few per tar, in order;
    the first that does not fit ends the list, so a worse one never takes a better one's place."""
    groups: list[list[int]] = []
    group_bytes: list[int] = []
    total = 0
    for seed, size in sizes.items():
        if total + size > PACK_TOTAL_BYTES:
            break
        if groups and group_bytes[-1] + size <= PACK_FILE_BYTES:
            groups[-1].append(seed)
            group_bytes[-1] += size
        elif len(groups) < PACK_FILES and size <= PACK_FILE_BYTES:
            groups.append([seed])
            group_bytes.append(size)
        else:
            break
        total += size
    return groups


def pack(out: Path, seeds: list[int], dest: Path) -> list[str]:
    """Tar the candidates of ``seeds`` (best first) into ``dest``, as many as fit; each untars to
    pictoworld-sSEED/."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for group in pack_groups({seed: _folder_bytes(out / str(seed)) for seed in seeds}):
        name = "pictoworld-" + "-".join(f"s{seed}" for seed in group) + ".tar"
        with tarfile.open(dest / name, "w") as tar:
            for seed in group:
                tar.add(out / str(seed), arcname=f"pictoworld-s{seed}")
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="folder for one candidate per seed (OUT/SEED)")
    parser.add_argument("--seeds", required=True, help="e.g. 2-9 or 2,3,5")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--n-images", type=int, default=44_000, help="the v9nc recipe's (RESULTS.md)")
    parser.add_argument("--unet-steps", type=int, default=13_000, help="the v9nc recipe's")
    parser.add_argument("--unet-channels", default=None, help="e.g. 64,128 (default: the preset's)")
    parser.add_argument(
        "--contrast-rate", type=float, default=None, help="world.contrast_sample's share (default: 0)"
    )
    parser.add_argument(
        "--vae-from", type=Path, default=None, help="a trained folder whose VAE every seed uses as it is"
    )
    parser.add_argument("--deadline-s", type=float, default=420, help="wall clock for training and gates")
    parser.add_argument("--reserve-s", type=float, default=90, help="kept for CLIP, the oracle and the gates")
    parser.add_argument("--poll-s", type=float, default=20)
    parser.add_argument("--gate-neutral", type=int, default=256)
    parser.add_argument("--gate-explicit", type=int, default=64)
    parser.add_argument("--keep", type=int, default=8, help="at most this many of the best are packed")
    parser.add_argument(
        "--pack", type=Path, default=None, help="tar the best here, as many as the device tool brings back"
    )
    args = parser.parse_args()
    try:
        args.seeds = parse_seeds(args.seeds)
        import diffsteer.cli  # noqa: F401  (its log filter keeps transformers' torchvision notice out)
        from diffsteer.models import check_device
        from diffsteer.pictoworld.train import config_from_preset, vae_source

        check_device(args.device)
        config_from_preset(args.preset, contrast_rate=args.contrast_rate)  # a bad preset or rate
        if args.vae_from is not None:
            vae_source(args.vae_from, "--vae-from")
    except Exception as exc:  # a bad seed list, device, preset, rate or VAE: one line, nothing trained
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    args.started = time.time()
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    finished = train_seeds(args, log)
    gates: dict[int, dict] = {}
    try:
        gates = gate_seeds(args, finished, log) if finished else {}
    except Exception as exc:  # the trained candidates are the costly part: they still get packed
        log(f"the gates stopped: {exc!r}")
    order = rank(gates)
    summary = {"seeds": args.seeds, "finished": finished, "ranked": order, "gates": gates, "log": lines}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.pack is not None:
        ungated = [seed for seed in finished if seed not in gates]
        summary["packed"] = pack(args.out, (order + ungated)[: args.keep], args.pack)
        (args.pack / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.exit(0 if finished else 1)


if __name__ == "__main__":
    main()
