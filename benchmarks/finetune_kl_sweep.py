"""DPOK against SFT at matched KL: the reward-KL curves of fine-tune runs in one plot, and a table.

Each `diffsteer finetune` run folder holds `history.json` (per update: the batch's mean reward, the KL
to the frozen model summed over the trajectory) and `recipe.json`. This script reads any number of
them and draws mean training reward against KL, one curve per run (DPOK in blue, SFT in orange,
darker for a larger `--kl-coef`), then prints a markdown table of each run's end point.

Both axes are noisy from update to update (each update draws new seeds; the same seeds in every
run, so runs are paired update by update), so each curve is a running mean over `--window` updates,
and the end point is the mean over the last `--window` updates. The reward is the training reward:
the model's own CLIP judge, not the oracle.

Read runs and plot:

  python benchmarks/finetune_kl_sweep.py runs/ft_fair_dpok_lr1e-2 runs/ft_fair_sft_lr1e-2 ... \\
      --plot benchmarks/figures/finetune_kl_sweep.svg

Train the sweep first (docs/finetune.md's fairness recipe; one run per method and coefficient, in
turn; rerunning resumes each from its checkpoint, finished runs are only read):

  OMP_NUM_THREADS=1 python benchmarks/finetune_kl_sweep.py --train --root runs/klsweep \\
      --method dpok --method sft --kl-coef 0.01 --kl-coef 0.1 --kl-coef 1.0 --learning-rate 1e-2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# docs/finetune.md's fairness recipe: the five gender-skewed professions, 5 x 8 images per update
FAIR_PROMPTS = ("doctor", "nurse", "pilot", "soldier", "hairdresser")
FAIR_RECIPE: dict[str, Any] = dict(
    reward="fairness",
    axis="gender",
    prompts_per_iteration=5,
    images_per_prompt=8,
    timesteps_per_sample=5,
)
COLOURS = {"dpok": ("#9ecae1", "#08306b"), "sft": ("#fdd0a2", "#7f2704")}  # light -> dark per method


def read_run(folder: Path) -> dict[str, Any]:
    recipe = json.loads((folder / "recipe.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    if not history:
        raise ValueError(f"{folder}: history.json is empty")
    return {"folder": folder, "recipe": recipe, "history": history}


def running_mean(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def gains(run: dict[str, Any], base: list[float] | None) -> list[float]:
    """Per update: the reward, or with a baseline the reward minus the base model's on the same seeds."""
    rewards = [h["reward"] for h in run["history"]]
    return rewards if base is None else [r - b for r, b in zip(rewards, base, strict=False)]


def end_point(run: dict[str, Any], window: int, base: list[float] | None, paired: int) -> dict[str, Any]:
    tail = run["history"][-window:]
    r = run["recipe"]
    g = gains(run, base)
    return {
        "run": run["folder"].name,
        "method": r["method"],
        "kl_coef": r["kl_coef"],
        "learning_rate": r["learning_rate"],
        "sft_temperature": r.get("sft_temperature", 1.0),
        "iterations": len(run["history"]),
        "kl": _mean([h["kl"] for h in tail]),
        "reward": _mean([h["reward"] for h in tail]),
        "gain": _mean(g[-window:]),
        # updates 6..paired: the same seeds in every run, so this column is paired across runs
        "gain_paired": _mean(g[5:paired]),
        "gain_paired_se": _standard_error(g[5:paired]),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _standard_error(values: list[float]) -> float:
    # treats the updates as independent draws: a rough yardstick, the updates share the adapter
    if len(values) < 2:
        return float("nan")
    mean = _mean(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def table(runs: list[dict[str, Any]], window: int, base: list[float] | None) -> str:
    paired = min(len(r["history"]) for r in runs)
    rows = sorted((end_point(r, window, base, paired) for r in runs), key=lambda p: (p["method"], p["kl"]))
    head = (
        f"| method | kl_coef | lr | SFT temperature | updates | KL (last {window}) | reward (last {window}) "
    )
    if base is not None:
        head += f"| reward - base (last {window}) | reward - base (updates 6-{paired}) ± s.e. | run |"
    else:
        head += f"| reward (updates 6-{paired}) | run |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for p in rows:
        temp = f"{p['sft_temperature']:g}" if p["method"] == "sft" else "–"
        row = f"| {p['method'].upper()} | {p['kl_coef']:g} | {p['learning_rate']:g} | {temp} "
        row += f"| {p['iterations']} | {p['kl']:.3g} | {p['reward']:.3f} "
        row += (
            f"| {p['gain']:+.3f} | {p['gain_paired']:+.3f} ± {p['gain_paired_se']:.3f} "
            if base is not None
            else f"| {p['gain_paired']:.3f} "
        )
        lines.append(row + f"| {p['run']} |")
    if base is not None:
        lines.append(
            f"| base model | – | – | – | – | 0 | {_mean(base[-window:]):.3f} | 0 | 0 | (frozen, same seeds) |"
        )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], window: int, base: list[float] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "finetune_kl_sweep"  # stable ids: the same runs give the same SVG
    paired = min(len(r["history"]) for r in runs)
    coefs = {m: sorted({r["recipe"]["kl_coef"] for r in runs if r["recipe"]["method"] == m}) for m in COLOURS}
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for run in sorted(runs, key=lambda r: (r["recipe"]["method"], r["recipe"]["kl_coef"])):
        r = run["recipe"]
        g = gains(run, base)
        # the first update's KL is 0 (the adapter starts at zero): the log axis starts after it
        keep = [i for i, h in enumerate(run["history"]) if h["kl"] > 0]
        kl = running_mean([run["history"][i]["kl"] for i in keep], window)
        y = running_mean([g[i] for i in keep], window)
        light, dark = COLOURS.get(r["method"], ("#bbbbbb", "#333333"))
        own = coefs.get(r["method"]) or [r["kl_coef"]]
        shade = own.index(r["kl_coef"]) / max(1, len(own) - 1)  # darker: a larger kl_coef
        colour = _blend(light, dark, 0.35 + 0.65 * shade)
        label = f"{r['method'].upper()} kl {r['kl_coef']:g}, lr {r['learning_rate']:g}"
        if r["method"] == "sft" and r.get("sft_temperature", 1.0) != 1.0:
            label += f", T {r['sft_temperature']:g}"
        style = "-" if r["learning_rate"] >= 1e-2 else ":"
        ax.plot(kl, y, style, color=colour, linewidth=1.4, alpha=0.8, label=label)
        end = end_point(run, window, base, paired)
        marker = "o" if r["method"] == "dpok" else "s"
        ax.plot(
            [end["kl"]], [end["gain_paired"]], marker, color=colour, markersize=8, markeredgecolor="black"
        )
    ax.set_xscale("log")
    if base is not None:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"KL to the frozen model, per trajectory (running mean of {window} updates)")
    what = "reward gain over the base model, same seeds" if base is not None else "training reward"
    ax.set_ylabel(f"{what}\n(CLIP judge; running mean of {window})", fontsize=9)
    ax.set_title(
        f"DPOK (o, blue) vs SFT (s, orange), fairness reward on pictoworld\n"
        f"markers: KL of the last {window} updates, reward gain over updates 6-{paired}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)


def _blend(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def run_name(method: str, kl_coef: float, learning_rate: float, sft_temperature: float) -> str:
    name = f"{method}_lr{learning_rate:g}_kl{kl_coef:g}"
    return name + (f"_t{sft_temperature:g}" if method == "sft" and sft_temperature != 1.0 else "")


# what decides the images an update samples from the frozen model (not lr, kl_coef or method)
SAMPLING_KEYS = (
    "model",
    "prompts",
    "prompts_per_iteration",
    "images_per_prompt",
    "steps",
    "guidance",
    "eta",
    "seed",
    "reward",
)


def _sampling_key(recipe: dict[str, Any]) -> dict[str, Any]:
    key = {k: recipe.get(k) for k in SAMPLING_KEYS}
    # the judge's path names the checkout it was loaded from; the bundled weights are the same
    key["reward"] = {k: v for k, v in (key["reward"] or {}).items() if k != "judge"}
    return key


def sampling_recipe(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [_sampling_key(r["recipe"]) for r in runs]
    for run, key in zip(runs, keys, strict=True):
        if key != keys[0]:
            differs = [k for k in SAMPLING_KEYS if key[k] != keys[0][k]]
            raise SystemExit(
                f"--baseline: {run['folder']} samples otherwise than {runs[0]['folder']} ({differs})"
            )
    judge = runs[0]["recipe"]["reward"].get("judge")
    return {**keys[0], "judge": judge, "iterations": max(len(r["history"]) for r in runs)}


def _judge_path(recipe: dict[str, Any]) -> str:
    from diffsteer.models import default_classifier

    judge = recipe.get("judge")
    return judge if judge and Path(judge).exists() else default_classifier(recipe["model"])


def base_rewards(recipe: dict[str, Any], out: Path) -> list[float]:
    """The frozen model's mean reward at each update's seeds (cached in ``out``): the paired baseline.

    Every run with the same seed samples update i from the same seeds, so a run's reward minus this
    is its gain over the base model on exactly the images it would have drawn untrained.
    """
    if out.exists():
        cached = json.loads(out.read_text())
        if (
            _sampling_key(cached["recipe"]) == _sampling_key(recipe)
            and len(cached["rewards"]) >= recipe["iterations"]
        ):
            return cached["rewards"]
    print(
        f"sampling the base model at the runs' seeds ({recipe['iterations']} updates) into {out}", flush=True
    )
    from diffsteer.attributes.clip_zero_shot import ClipZeroShotClassifier
    from diffsteer.experiments.finetune import StochasticDDIM, TrainingPrompt, sample_trajectories
    from diffsteer.experiments.rewards import build_reward
    from diffsteer.models import load_pipeline
    from diffsteer.runs.executors import GeneratorSpec

    prompts = [TrainingPrompt(p["text"], dict(p["attributes"])) for p in recipe["prompts"]]
    rw = recipe["reward"]
    judge = ClipZeroShotClassifier.from_pretrained(_judge_path(recipe))
    scorer = build_reward(rw["name"], judge, axis=rw.get("axis"), target=rw.get("target"), prompts=prompts)
    pipe = load_pipeline(recipe["model"], device="cpu", dtype="float32")
    spec = GeneratorSpec(
        model=recipe["model"], steps=recipe["steps"], guidance=recipe["guidance"], batch_size=len(prompts)
    )
    generator = spec.prepare(pipe)
    sampler = StochasticDDIM(pipe.scheduler.config, recipe["steps"], recipe["eta"])
    per_update, n = recipe["prompts_per_iteration"], len(prompts)
    rewards = []
    for iteration in range(recipe["iterations"]):
        # the same prompts and seeds as experiments/finetune.py's update `iteration`
        chosen = [prompts[(iteration * per_update + j) % n] for j in range(per_update)]
        batch_prompts = [p for p in chosen for _ in range(recipe["images_per_prompt"])]
        base_seed = recipe["seed"] * 1_000_003 + iteration * 10_007
        seeds = [base_seed + i for i in range(len(batch_prompts))]
        batch = sample_trajectories(generator, sampler, batch_prompts, seeds)
        rewards.append(float(scorer(batch.images, batch_prompts).mean()))
        print(
            f"  base model, update {iteration + 1}/{recipe['iterations']}: reward {rewards[-1]:.4f}",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recipe": recipe, "rewards": rewards}, indent=2))
    return rewards


def train(args: argparse.Namespace) -> list[Path]:
    from diffsteer.experiments.finetune import TrainingPrompt, run_finetune

    prompts = [TrainingPrompt(f"a photo of a {p}", {}) for p in FAIR_PROMPTS]
    folders = []
    for method in args.method:
        for kl_coef in args.kl_coef:
            out = Path(args.root) / run_name(method, kl_coef, args.learning_rate, args.sft_temperature)
            print(f"{out}: {method}, kl_coef {kl_coef:g}", flush=True)

            def show(done: int, total: int, row: dict, name: str = out.name) -> None:
                print(f"  {name} {done}/{total}: reward {row['reward']:.4f}, KL {row['kl']:.4f}", flush=True)

            run_finetune(
                out,
                method=method,
                prompts=prompts,
                iterations=args.iterations,
                learning_rate=args.learning_rate,
                kl_coef=kl_coef,
                sft_temperature=args.sft_temperature,
                progress=show,
                **FAIR_RECIPE,
            )
            folders.append(out)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finetune run folders to read")
    parser.add_argument("--window", type=int, default=5, help="updates per running mean / end point")
    parser.add_argument("--plot", type=Path, default=Path("runs/finetune_kl_sweep.svg"))
    parser.add_argument(
        "--baseline",
        type=Path,
        help="JSON cache of the base model's reward at the runs' seeds (sampled once if absent): "
        "the plot then shows each run's gain over the base model, paired update by update",
    )
    parser.add_argument("--train", action="store_true", help="train the sweep's runs first (resumable)")
    parser.add_argument("--root", default="runs/klsweep", help="--train: parent folder of the runs")
    parser.add_argument("--method", action="append", choices=("dpok", "sft"))
    parser.add_argument("--kl-coef", action="append", type=float)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--sft-temperature", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be >= 1")
    args.method = args.method or ["dpok", "sft"]
    args.kl_coef = args.kl_coef or [0.01, 0.1, 1.0]
    folders = list(args.runs)
    for folder in folders:
        if not (folder / "history.json").exists() or not (folder / "recipe.json").exists():
            parser.error(f"{folder}: not a finetune run folder (history.json and recipe.json)")
    if args.train:
        folders += train(args)
    if not folders:
        parser.error("give run folders, or --train")
    runs = [read_run(f) for f in dict.fromkeys(folders)]
    base = base_rewards(sampling_recipe(runs), args.baseline) if args.baseline else None
    plot(runs, args.window, base, args.plot)
    print(table(runs, args.window, base))
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
