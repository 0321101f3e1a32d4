"""The ``diffsteer`` command line: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Audit text-to-image models for bias; steer them."
)
pictoworld_app = typer.Typer(no_args_is_help=True, help="The bundled synthetic world and its models.")
app.add_typer(pictoworld_app, name="pictoworld")
learn_app = typer.Typer(no_args_is_help=True, help="Learn steering files: h-space vectors, noise directions.")
app.add_typer(learn_app, name="learn")
console = Console(stderr=True)


def _fail(exc: BaseException) -> None:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    console.print(f"[red]error:[/red] {first}", highlight=False)
    raise typer.Exit(2)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from diffsteer.attributes import ClassifierNotFoundError, UnknownAxisError
    from diffsteer.benchmarks.spec import BenchmarkError
    from diffsteer.models import ModelNotFoundError, UnsupportedModelError
    from diffsteer.store import RunConfigMismatch

    return (
        ModelNotFoundError,
        UnsupportedModelError,
        BenchmarkError,
        UnknownAxisError,
        ClassifierNotFoundError,
        RunConfigMismatch,
        ValueError,
        FileNotFoundError,
    )


@contextmanager
def _progress_bar():
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


_HSPACE = typer.Option([], "--hspace", help="h-space vector NAME[:strength] (repeat; composes by sum).")
_NOISE = typer.Option([], "--noise-direction", help="Noise direction NAME[:weight] (repeat; adds linearly).")
_TEXT = typer.Option([], "--text-offset", help="Text-embedding offset NAME[:weight] (repeat).")
_FAIR = typer.Option(None, "--fair", help="Fair generation over these axes (comma list), e.g. gender.")
_FAIR_METHOD = typer.Option("hspace", "--fair-method", help="hspace | noise: what steers each image's class.")
_FAIR_TARGET = typer.Option(None, "--fair-target", help="Target shares, e.g. woman=0.5,man=0.5.")
_SAFE = typer.Option(False, "--safe", help="Apply every anti-concept h-space vector (anti-*.hspace).")
_RESPONSIBLE = typer.Option(
    False, "--responsible", help="Switch vectors on when the prompt asks (e.g. 'either male or female')."
)
_PRESET = typer.Option(None, "--steering", help="A steering preset YAML (e.g. exported from the studio).")
_DIRECTIONS = typer.Option([], "--directions", help="Extra folder of steering files (repeat).")


def _steering(preset, hspace, noise, text, fair, fair_method, fair_target, safe, responsible, directions):
    from diffsteer.steering.preset import resolve_steering

    return resolve_steering(
        preset,
        hspace=hspace,
        noise=noise,
        text=text,
        fair=fair,
        fair_method=fair_method,
        fair_target=fair_target,
        safe=safe,
        responsible=responsible,
        directions=[str(d) for d in directions],
    )


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


@app.command()
def audit(
    model: str = typer.Option("pictoworld", help="Bundled model name, local pipeline folder, or hub id."),
    benchmark: str | None = typer.Option(None, help="entigen | winobias | pictoworld | path to a YAML file."),
    category: str | None = typer.Option(None, help="Only prompts of this group (e.g. profession)."),
    prompt_types: str = typer.Option(
        "neutral", help="Comma list of prompt kinds: neutral,ethical,irrelevant."
    ),
    axes: str | None = typer.Option(None, help="Comma list of axes: gender,skin_tone,culture."),
    culture_classes: str | None = typer.Option(None, help="Comma list of culture classes."),
    images_per_prompt: int | None = typer.Option(None, help="Images per prompt (default: the benchmark's)."),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Seed of image 0; image k uses seed+k under every mitigation."),
    mitigation: list[str] = typer.Option(
        ["none"],
        help="Mitigation (repeat): none, intervention, hspace-fair, hspace-safe, noise-fair, steered",
    ),
    hspace: list[str] = _HSPACE,
    noise_direction: list[str] = _NOISE,
    text_offset: list[str] = _TEXT,
    fair: str | None = _FAIR,
    fair_method: str = _FAIR_METHOD,
    fair_target: str | None = _FAIR_TARGET,
    safe: bool = _SAFE,
    responsible: bool = _RESPONSIBLE,
    steering: Path | None = _PRESET,
    directions: list[Path] = _DIRECTIONS,
    classifier: str | None = typer.Option(
        None, help="CLIP checkpoint (default: the model's own, or ViT-B/32)."
    ),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
    batch_size: int = typer.Option(16),
    out: Path = typer.Option(
        Path("runs/audit"), help="Run folder (results.sqlite, images/, summary.json, report)."
    ),
    resume: bool = typer.Option(False, help="Continue a run made with a different configuration."),
    force: bool = typer.Option(False, help="Delete a previous run in --out and start again."),
) -> None:
    """Measure bias: generate the benchmark's images, classify them, write summary.json and report.html."""
    from diffsteer.audit import AuditConfig, run_audit

    mitigations = tuple(m for item in mitigation for m in _csv(item) or ())
    try:
        spec = _steering(
            steering, hspace, noise_direction, text_offset, fair, fair_method, fair_target, safe, responsible,
            directions,
        )
    except _expected_errors() as exc:
        _fail(exc)
    config = AuditConfig(
        model=model,
        benchmark=benchmark,
        category=category,
        prompt_types=_csv(prompt_types) or ("neutral",),
        axes=_csv(axes),
        culture_classes=_csv(culture_classes),
        images_per_prompt=images_per_prompt,
        steps=steps,
        guidance=guidance,
        seed=seed,
        mitigations=mitigations,
        steering=spec,
        classifier=classifier,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )
    try:
        with _progress_bar() as update:
            result = run_audit(
                config,
                out,
                resume=resume,
                force=force,
                progress=update,
                warn=lambda m: console.print(f"[yellow]warning:[/yellow] {m}", highlight=False),
            )
    except _expected_errors() as exc:
        _fail(exc)
    (result.run_dir / "command.txt").write_text(shlex.join(["diffsteer", *sys.argv[1:]]) + "\n")
    _print_summary(result.summary)
    console.print(
        f"generated {result.generated} images, classified {result.classified} in {result.seconds:.0f}s"
    )
    print(f"report: {result.report}")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="bias by mitigation and axis (prompt-level mean)")
    for col in (
        "mitigation",
        "axis",
        "ENTIGEN bias",
        "deviation ratio",
        "95% interval",
        "counted",
        "dropped",
    ):
        table.add_column(col)
    for r in summary["results"]:
        if r["prompt"] is not None:
            continue
        ci = r["deviation_ratio_ci95"]
        table.add_row(
            r["mitigation"],
            r["axis"],
            _fmt(r["entigen_bias"]),
            _fmt(r["deviation_ratio"]),
            "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            str(sum(r["counts"].values())),
            str(r["n_dropped"]),
        )
    console.print(table)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="The prompt."),
    model: str = typer.Option("pictoworld"),
    n: int = typer.Option(8, "--n", help="Number of images (seeds seed..seed+n-1)."),
    seed: int = typer.Option(0),
    steps: int = typer.Option(20),
    guidance: float = typer.Option(7.5),
    mitigation: str = typer.Option(
        "none", help="none | intervention | hspace-fair | hspace-safe | noise-fair | steered"
    ),
    axes: str = typer.Option("gender", help="Axes of an intervention or a fair mitigation."),
    hspace: list[str] = _HSPACE,
    noise_direction: list[str] = _NOISE,
    text_offset: list[str] = _TEXT,
    fair: str | None = _FAIR,
    fair_method: str = _FAIR_METHOD,
    fair_target: str | None = _FAIR_TARGET,
    safe: bool = _SAFE,
    responsible: bool = _RESPONSIBLE,
    steering: Path | None = _PRESET,
    directions: list[Path] = _DIRECTIONS,
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32"),
    out: Path = typer.Option(Path("runs/generate")),
) -> None:
    """Generate a few images of one prompt for a quick look (PNG files and a grid)."""
    from diffsteer.preview import generate_preview

    try:
        spec = _steering(
            steering, hspace, noise_direction, text_offset, fair, fair_method, fair_target, safe, responsible,
            directions,
        )
        paths = generate_preview(
            prompt,
            out,
            model=model,
            n=n,
            seed=seed,
            steps=steps,
            guidance=guidance,
            mitigation=mitigation,
            axes=_csv(axes) or ("gender",),
            steering=spec,
            device=device,
            dtype=dtype,
        )
    except _expected_errors() as exc:
        _fail(exc)
    print(f"wrote {len(paths) - 1} images and {paths[-1]}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="An audit run folder."),
    path: Path = typer.Argument(..., help="Output file: .parquet or .csv"),
) -> None:
    """Export a run's images and labels as one table (Parquet or CSV)."""
    from diffsteer.store import RunStore

    try:
        with RunStore.open_existing(run_dir) as store:
            written = store.export(path)
    except _expected_errors() as exc:
        _fail(exc)
    print(f"wrote {written}")


@pictoworld_app.command("train")
def pictoworld_train(
    out: Path = typer.Option(
        Path("runs/pictoworld"), help="Folder for pipeline/, clip/, oracle/ and the record."
    ),
    preset: str = typer.Option("full", help="full (the bundled model) | smoke (seconds, for tests)."),
    seed: int = typer.Option(0),
) -> None:
    """Train the pictoworld models from scratch (about 35 minutes on 2 CPU cores with the full preset)."""
    from diffsteer.pictoworld.train import config_from_preset, train_pictoworld

    try:
        cfg = config_from_preset(preset, seed=seed)
    except ValueError as exc:
        _fail(exc)
    with Progress(
        TextColumn("{task.description:<7}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss="")
            bar.update(tasks[stage], completed=step, loss=f"loss {loss:.4f}")

        record = train_pictoworld(out, cfg, command=shlex.join(["diffsteer", *sys.argv[1:]]), progress=update)
    print(f"trained in {record['timings']['total_s']:.0f}s -> {out}")


if __name__ == "__main__":
    app()
