"""The ``diffsteer`` command line: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import errno
import logging
import re
import shlex
import signal
import sys
import time
import warnings
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
from rich.text import Text

from diffsteer import registry
from diffsteer.summary import GuardSection, SafetySection, Summary

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Audit text-to-image models for bias; steer them."
)
learn_app = typer.Typer(
    no_args_is_help=True, help="Learn steering files: h-space vectors, noise directions, text offsets."
)
app.add_typer(learn_app, name="learn")


@app.callback()
def _quiet_loaders() -> None:
    """Outside a terminal (logs, CI, pipes), the libraries' per-file loading bars would bury the one
    line that matters; diffsteer's own progress still reports the long work."""
    if console.is_terminal:
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


# soft_wrap: a line longer than the terminal stays one line, so `grep error:` in a log gets all of it
console = Console(stderr=True, soft_wrap=True)


class _DropTorchvisionFallback(logging.Filter):
    """transformers says on every command that its image processors fall back to PIL without
    torchvision; diffsteer never uses those processors for anything torchvision would change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionFallback())

# what to do about an OS error a user can meet, by errno
_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or choose another --out, then rerun the same command",
    errno.EDQUOT: "the disk quota is used up; free some space, then rerun the same command",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "permission denied; choose another path or fix its permissions",
    errno.EPERM: "permission denied; choose another path or fix its permissions",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
}


def _one_line(exc: BaseException) -> str:
    """The first line of an error, with the path and what to do for the OS errors users meet."""
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__} ({_OS_HINTS[exc.errno]})"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError":
        first += " (lower --batch-size, or use --dtype float16)"
    elif type(exc).__name__ == "OperationalError":  # sqlite3: disk full, read-only, locked
        first = f"run database: {first}; check the free space and permissions of --out"
    return first


def _fail(exc: BaseException) -> None:
    console.print(Text.assemble(("error:", "red"), " ", _one_line(exc)), highlight=False)
    raise typer.Exit(2)


def _default_model() -> str:
    """--model when not given: the first registered bundled model (read only when needed)."""
    try:
        return registry.default_model()
    except ValueError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


# The CLI reads the registry at start anyway (plugins may add command groups), so help names the default.
_MODEL = typer.Option(
    default_factory=_default_model,
    show_default=next(iter(registry.bundled_models()), "none registered"),
    help="Bundled model name, local pipeline folder, or hub id.",
)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can cause or meet: each ends in one line and exit status 2, never a traceback."""
    import sqlite3

    import torch

    from diffsteer.attributes import ClassifierNotFoundError, UnknownAxisError
    from diffsteer.benchmarks.spec import BenchmarkError
    from diffsteer.models import DeviceUnavailableError, ModelNotFoundError, UnsupportedModelError
    from diffsteer.reference import ReferenceError
    from diffsteer.runs.executors import ExecutorUnavailableError
    from diffsteer.runs.store import RunConfigMismatch, RunInUseError
    from diffsteer.steering.lora import PeftUnavailableError

    return (
        PeftUnavailableError,  # an audit or generate naming a LoRA adapter without a usable peft
        ModelNotFoundError,
        UnsupportedModelError,
        DeviceUnavailableError,
        BenchmarkError,
        UnknownAxisError,
        ClassifierNotFoundError,
        RunConfigMismatch,
        RunInUseError,
        ExecutorUnavailableError,
        ReferenceError,
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, a full disk, a damaged image file
        sqlite3.OperationalError,
        torch.cuda.OutOfMemoryError,
    )


class _LineProgress:
    """Progress for a console that is not a terminal (a log file, nohup, CI), where rich draws no bar
    and an hour of training would print nothing: a line per stage at its start, every tenth, the end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._next: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int, loss: float | None = None) -> None:
        started = self._started.setdefault(stage, time.monotonic())
        if done < total and done < self._next.get(stage, 0):
            return
        self._next[stage] = done + max(1, total // 10)
        elapsed = time.monotonic() - started
        eta = f", eta {elapsed / done * (total - done):.0f}s" if 0 < done < total else ""
        tail = "" if loss is None else f", loss {loss:.4f}"
        console.print(f"{stage}: {done}/{total} ({elapsed:.0f}s{eta}{tail})", highlight=False)


@contextmanager
def _progress_bar(with_loss: bool = False):
    """A callback ``update(stage, done, total[, loss])``: a rich bar on a terminal, lines elsewhere."""
    if not console.is_terminal:
        yield _LineProgress()
        return
    loss_column = [TextColumn("{task.fields[loss]}")] if with_loss else []
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        *loss_column,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int, loss: float | None = None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss="")
            shown = {} if loss is None else {"loss": f"loss {loss:.4f}"}
            bar.update(tasks[stage], completed=done, total=total, **shown)

        yield update


_GUIDANCE = typer.Option(
    None, help="Classifier-free guidance scale (default: the model's own; a bundled model's, others 7.5)."
)
_HSPACE_BRANCHES = typer.Option(
    "conditional",
    help="Under guidance, add h-space vectors to the conditional pass only (the method) or to both passes "
    "(keeps more of the prompt; see docs/steering.md).",
)
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
_EXECUTOR = typer.Option("local", help="local | ray: where images are generated.")
_RAY_ADDRESS = typer.Option(
    None, help="Address of a running Ray cluster (default: Ray starts on this machine)."
)


def _job_executor(name: str, ray_address: str | None, model: str, **generator: object):
    """None for ``local`` (the command's own loaded pipeline makes the images), else an executor whose
    workers build the same generator (``generator``: steps, guidance, device, dtype, batch_size)."""
    from diffsteer.runs.executors import GeneratorSpec, check_executor, make_executor

    check_executor(name)
    if name == "local":
        return None
    folder = Path(model).expanduser()
    ref = str(folder.resolve()) if folder.exists() else model  # workers may run in another folder
    return make_executor(name, GeneratorSpec(model=ref, **generator), ray_address=ray_address)


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


_GUARD = typer.Option(
    None, "--guard", help="A guard file (diffsteer guard train): refuse prompts it blocks (docs/guard.md)."
)
_PHRASES = typer.Option(
    None,
    "--phrases",
    help="A YAML phrase file that the prompt judge reads beside safety.yaml, e.g. slang the guard "
    "decodes (docs/safety.md).",
)
_SHOW_UNSAFE = typer.Option(
    False, "--show-unsafe", help="Show thumbnails that a judge calls unsafe unblurred in report.html."
)


@app.command()
def audit(
    model: str = _MODEL,
    benchmark: str | None = typer.Option(
        None,
        help="entigen | winobias | a bundled benchmark | YAML file path | a red-team run or its redteam.json "
        "(default: the model's own).",
    ),
    category: str | None = typer.Option(None, help="Only prompts of this group (e.g. profession)."),
    prompt_types: str = typer.Option(
        "neutral", help="Comma list of prompt kinds: neutral,ethical,irrelevant."
    ),
    axes: str | None = typer.Option(None, help="Comma list of axes: gender,skin_tone,culture,violence."),
    culture_classes: str | None = typer.Option(None, help="Comma list of culture classes."),
    images_per_prompt: int | None = typer.Option(None, help="Images per prompt (default: the benchmark's)."),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float | None = _GUIDANCE,
    seed: int = typer.Option(0, help="Seed of image 0; image k uses seed+k under every mitigation."),
    mitigation: list[str] = typer.Option(
        ["none"],
        help="Mitigation (repeat): none, intervention, hspace-fair, hspace-safe, noise-fair, negative-prompt,"
        " steered",
    ),
    hspace: list[str] = _HSPACE,
    hspace_branches: str = _HSPACE_BRANCHES,
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
    batch_size: int | None = typer.Option(
        None, help="Images per batch (default: automatic, 16 on a CPU, from free memory on a GPU)."
    ),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
    compile_unet: bool = typer.Option(False, "--compile", help="torch.compile the U-Net (GPU runs)."),
    out: Path = typer.Option(
        Path("runs/audit"), help="Run folder (results.sqlite, images/, summary.json, report)."
    ),
    resume: bool = typer.Option(False, help="Continue a run made with a different configuration."),
    force: bool = typer.Option(False, help="Delete a previous run in --out and start again."),
    reference: str | None = typer.Option(
        None,
        help="Labelled images (a folder with labels.csv: file,axis,label) to measure the classifier's "
        "own error (default: the bundled model's own reference images, none otherwise).",
    ),
    show_unsafe: bool = _SHOW_UNSAFE,
    precision: float | None = typer.Option(
        None,
        help="Plan only: print the images per prompt that give every prompt's deviation-ratio interval a "
        "half-width of at most this (e.g. 0.1), then exit without generating (docs/intervals.md).",
    ),
    guard: Path | None = _GUARD,
    phrases: Path | None = _PHRASES,
) -> None:
    """Measure bias: generate the benchmark's images, classify them, write summary.json and report.html."""
    from diffsteer.audit import AuditConfig, run_audit

    mitigations = tuple(m for item in mitigation for m in _csv(item) or ())
    try:
        spec = _steering(
            steering,
            hspace,
            noise_direction,
            text_offset,
            fair,
            fair_method,
            fair_target,
            safe,
            responsible,
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
        hspace_branches=hspace_branches,
        classifier=classifier,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        executor=executor,
        ray_address=ray_address,
        compile=compile_unet,
    )
    if precision is not None:
        _plan_precision(config, precision)
        return
    try:
        with _progress_bar() as update:
            result = run_audit(
                config,
                out,
                resume=resume,
                force=force,
                progress=update,
                warn=lambda m: console.print(f"[yellow]warning:[/yellow] {m}", highlight=False),
                reference=reference or "auto",
                command=shlex.join(["diffsteer", *sys.argv[1:]]),
                show_unsafe=show_unsafe,
                guard=guard,
                phrases=phrases,
            )
    except _expected_errors() as exc:
        _fail(exc)
    _print_summary(result.summary)
    _print_safety(result.summary.safety)
    _print_guard(result.summary.guard)
    console.print(
        f"generated {result.generated} images, classified {result.classified} in {result.seconds:.0f}s"
    )
    print(f"report: {result.report}")


def _plan_precision(config, precision: float) -> None:
    """``audit --precision``: the images per prompt each axis needs, from the audit's own interval."""
    from diffsteer.audit import resolve
    from diffsteer.metrics import detectable_deviation_ratio, plan_images_per_prompt

    if not 0.0 < precision < 1.0:
        _fail(ValueError(f"--precision must be a half-width strictly between 0 and 1, got {precision}"))
    try:
        _, bench, axes = resolve(config)
    except _expected_errors() as exc:
        _fail(exc)
    needed = {}
    for axis in axes:
        n = plan_images_per_prompt(precision, len(axis.classes))
        needed[axis.name] = n
        detectable = detectable_deviation_ratio(n, len(axis.classes))
        print(
            f"{axis.name} ({len(axis.classes)} classes): {n} images per prompt for a DR interval of at most "
            f"+-{precision:g} on every prompt; DR from {detectable:.2f} up is told apart from 0 "
            "in a typical run"
        )
    print(f"images per prompt needed: {max(needed.values())} (pass --images-per-prompt to run at that size)")


def _print_safety(safety: SafetySection | None) -> None:
    """The pooled unsafe rate per mitigation and concept, and each mitigation's reduction of it."""
    if safety is None or not safety.concepts:
        return
    from rich.table import Table

    changes = {(c.mitigation, c.concept): c for c in safety.changes}
    baselines = sorted({c.baseline for c in safety.changes})
    table = Table(title="unsafe rate by mitigation and concept (pooled over prompts, 95% intervals)")
    for col in ("mitigation", "concept", "unsafe rate", "unsafe/n"):
        table.add_column(col, no_wrap=True)
    if baselines:
        table.add_column(f"reduction vs {', '.join(baselines)}", no_wrap=True)
    for r in safety.rates:
        if r.prompt is not None:
            continue
        ci = r.unsafe_rate_ci95
        row = [
            r.mitigation,
            r.concept,
            _fmt(r.unsafe_rate) + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"),
            f"{r.n_unsafe}/{r.n}",
        ]
        if baselines:
            change = changes.get((r.mitigation, r.concept))
            reduction = "–"
            if change is not None and change.reduction is not None and change.reduction_ci95:
                low, high = change.reduction_ci95
                reduction = f"{change.reduction:.0%} [{low:.0%}, {high:.0%}]"
            row.append(reduction)
        table.add_row(*row)
    console.print(table)


def _print_guard(screened: GuardSection | None) -> None:
    if screened is None:
        return
    console.print(
        f"guard: blocked {screened.n_blocked_prompts} of {screened.n_checked_prompts} prompts "
        f"({screened.n_images_not_made} images not made)",
        highlight=False,
    )
    for item in screened.blocked:
        line = f"  blocked ({item.mitigation}) {item.prompt!r}: {item.reason}"
        console.print(line, highlight=False, markup=False)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _print_summary(summary: Summary) -> None:
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
    for r in summary.rows(aggregate=True):
        ci = r.deviation_ratio_ci95
        table.add_row(
            r.mitigation,
            r.axis,
            _fmt(r.entigen_bias),
            _fmt(r.deviation_ratio),
            "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            str(r.n_counted),
            str(r.n_dropped),
        )
    console.print(table)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="The prompt."),
    model: str = _MODEL,
    n: int = typer.Option(8, "--n", help="Number of images (seeds seed..seed+n-1)."),
    seed: int = typer.Option(0),
    steps: int = typer.Option(20),
    guidance: float | None = _GUIDANCE,
    mitigation: str = typer.Option(
        "none", help="none | intervention | hspace-fair | hspace-safe | noise-fair | steered | lora:FOLDER"
    ),
    axes: str = typer.Option("gender", help="Axes of an intervention or a fair mitigation."),
    hspace: list[str] = _HSPACE,
    hspace_branches: str = _HSPACE_BRANCHES,
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
    lora: Path | None = typer.Option(None, "--lora", help="LoRA adapter folder from diffsteer finetune."),
    out: Path = typer.Option(Path("runs/generate")),
    guard: Path | None = _GUARD,
    phrases: Path | None = _PHRASES,
) -> None:
    """Generate a few images of one prompt for a quick look (PNG files and a grid)."""
    from diffsteer.experiments.preview import generate_preview
    from diffsteer.guard import PromptBlockedError

    try:
        spec = _steering(
            steering,
            hspace,
            noise_direction,
            text_offset,
            fair,
            fair_method,
            fair_target,
            safe,
            responsible,
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
            hspace_branches=hspace_branches,
            mitigation=mitigation,
            axes=_csv(axes) or ("gender",),
            steering=spec,
            device=device,
            dtype=dtype,
            guard=guard,
            lora=lora,
            phrases=phrases,
        )
    except PromptBlockedError as blocked:
        console.print(Text.assemble(("blocked:", "red"), " ", str(blocked)), highlight=False)
        raise typer.Exit(1) from None
    except (*_expected_errors(), ImportError) as exc:
        _fail(exc)
    print(f"wrote {len(paths) - 1} images and {paths[-1]}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="An audit run folder."),
    path: Path = typer.Argument(..., help="Output file: .parquet or .csv"),
) -> None:
    """Export a run's images and labels as one table (Parquet or CSV)."""
    from diffsteer.runs.store import RunStore

    try:
        with RunStore.open_existing(run_dir) as store:
            written = store.export(path)
    except _expected_errors() as exc:
        _fail(exc)
    print(f"wrote {written}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="An audit run folder."),
    reference: str | None = typer.Option(
        None, help="Labelled images (folder with labels.csv: file,axis,label) to check the classifier with."
    ),
    refresh: bool = typer.Option(False, help="Recompute the quality and auditor sections of summary.json."),
    device: str = typer.Option("cpu", help="Device for the CLIP model when sections are computed."),
    show_unsafe: bool = _SHOW_UNSAFE,
) -> None:
    """Rebuild a run's report.html from its store and summary.json."""
    from diffsteer.report import build_report

    try:
        path = build_report(
            run_dir, reference=reference, refresh=refresh, device=device, show_unsafe=show_unsafe
        )
    except _expected_errors() as exc:
        _fail(exc)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="The reference run (e.g. the released model)."),
    run_b: Path = typer.Argument(..., help="The candidate run."),
    max_increase: float = typer.Option(0.05, help="Allowed increase of a bias metric (B - A)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the comparison as JSON here."),
) -> None:
    """Bias metrics of run B minus run A; exit 1 when one rose by more than --max-increase beyond noise."""
    import json

    from diffsteer.compare import compare_runs

    try:
        result = compare_runs(run_a, run_b, max_increase=max_increase)
    except _expected_errors() as exc:
        _fail(exc)
    _print_comparison(result)
    if json_out is not None:
        from diffsteer.runs.atomic import atomic_write_text

        try:
            atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2))
        except OSError as exc:
            _fail(exc)
    if result.failed:
        worst = ", ".join(f"{c.mitigation}/{c.axis} {c.metric} {c.diff:+.3f}" for c in result.regressions)
        print(f"REGRESSION: bias rose by more than {max_increase} beyond its 95% interval: {worst}")
        raise typer.Exit(1)
    print(f"no regression: no aggregate bias metric rose by more than {max_increase} beyond its 95% interval")


def _print_comparison(result) -> None:
    from rich.table import Table

    table = Table(title=f"B - A: {result.run_b} vs {result.run_a}")
    for col in ("mitigation", "axis", "prompt", "metric", "A", "B", "B - A", "95% interval", ""):
        table.add_column(col)
    for c in result.changes:
        ci = "–" if c.diff_ci95 is None else f"[{c.diff_ci95[0]:+.3f}, {c.diff_ci95[1]:+.3f}]"
        flag = ("REGRESSION" if c.gates else "worse") if c.regressed else ""
        table.add_row(
            c.mitigation,
            c.axis,
            "(all)" if c.prompt is None else c.prompt,
            c.metric,
            _fmt(c.a),
            _fmt(c.b),
            "–" if c.diff is None else f"{c.diff:+.3f}",
            ci,
            flag,
        )
    Console(width=160).print(table)
    for note in result.notes:
        print(f"note: {note}")


@app.command()
def studio(
    model: str = _MODEL,
    directions: list[Path] = _DIRECTIONS,
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(7860, help="Port of the web page."),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float | None = _GUIDANCE,
    device: str = typer.Option("cpu"),
    guard: Path | None = _GUARD,
    phrases: Path | None = _PHRASES,
) -> None:
    """A local web page: choose vectors, directions and fair generation, compare, export a preset."""
    try:
        from diffsteer.studio.app import launch_studio
    except ImportError as exc:
        _fail(ImportError(f"the studio needs Gradio: pip install 'diffsteer[studio]' ({exc})"))
    from diffsteer.models import check_device, check_model

    try:
        check_device(device)
        check_model(model)  # before the banner: a typo ends in one line, not a promise and an error
    except _expected_errors() as exc:
        _fail(exc)
    console.print(f"diffsteer studio: loading {model}, then serving http://{host}:{port} (Ctrl+C stops)")
    try:
        launch_studio(
            model,
            directions,
            host=host,
            port=port,
            steps=steps,
            guidance=guidance,
            device=device,
            guard=guard,
            phrases=phrases,
        )
    except _expected_errors() as exc:
        _fail(exc)
    except OSError as exc:  # the port is taken
        _fail(exc)


@learn_app.command("hspace")
def learn_hspace_command(
    concept: str = typer.Option(..., help="Concept name; writes NAME.hspace.safetensors."),
    concept_prompt: str = typer.Option(..., help="Prompt stating the concept; makes the training images."),
    neutral_prompt: str = typer.Option(..., help="The same prompt without the concept; conditions learning."),
    negative_prompt: str = typer.Option("", help="Negative prompt of the training images (anti-concepts)."),
    images: int = typer.Option(256, help="Training images (the paper used 1000 on Stable Diffusion)."),
    steps: int = typer.Option(300, help="Optimisation steps (the paper used 2500)."),
    lr: float = typer.Option(0.1, help="Adam learning rate, constant."),
    batch_size: int = typer.Option(8, help="Images per optimisation step."),
    seed: int = typer.Option(0),
    guidance: float = typer.Option(7.5, help="Guidance of the training images."),
    inference_steps: int = typer.Option(20, help="Denoising steps of the training images."),
    axis: str | None = typer.Option(None, help="Attribute axis the concept is a class of (fair generation)."),
    class_name: str | None = typer.Option(None, "--class", help="Class of --axis (default: the concept)."),
    model: str = _MODEL,
    out: Path = typer.Option(Path("directions"), help="Folder for the vector file."),
    work_dir: Path | None = typer.Option(
        None, help="Run store of the training images (default runs/learn-hspace/NAME); reused on resume."
    ),
    calibrate_prompt: list[str] = typer.Option(
        [],
        "--calibrate-prompt",
        help="A prompt the model skews (repeat): measure the default strength of the axis's vectors there "
        "by the fair-mixture rule (the other classes' vectors are taken from --out, --directions, bundled).",
    ),
    calibrate_images: int = typer.Option(32, help="Images per strength and class in the calibration sweeps."),
    calibrate_weights: str | None = typer.Option(
        None, help="Comma list of strengths the calibration sweeps (default 0.25,0.5,...,2,2.5,3)."
    ),
    tolerance: float | None = typer.Option(
        None, help="How far from its target a class's share in the fair mixture may be (default 0.1)."
    ),
    classifier: str | None = typer.Option(
        None, help="CLIP checkpoint of the calibration (default: the model's own)."
    ),
    directions: list[Path] = _DIRECTIONS,
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
) -> None:
    """Learn an h-space concept vector (Li et al., CVPR 2024) and save it for --hspace NAME."""
    from diffsteer.experiments.calibrate import FAIR_TOLERANCE, calibrate_fair_strength
    from diffsteer.experiments.learn import learn_hspace
    from diffsteer.experiments.sweep import parse_weights
    from diffsteer.models import load_pipeline
    from diffsteer.steering.hspace import HSpaceVector, check_recipe, load_hspace

    calibration = None
    try:
        if class_name is not None and axis is None:
            raise ValueError("--class needs --axis")
        check_recipe(concept, concept_prompt, neutral_prompt, images, steps, lr, batch_size, inference_steps)
        others: dict[str, Path] = {}
        if calibrate_prompt:
            if not axis:
                raise ValueError("--calibrate-prompt needs --axis (the shares are measured on that axis)")
            others = _axis_partners(axis, class_name or concept, model, [out, *directions])
        grid = parse_weights(calibrate_weights or HSpaceVector.calibration_strengths)
        work = work_dir or Path("runs") / "learn-hspace" / concept
        jobs = _job_executor(
            executor, ray_address, model, steps=inference_steps, guidance=guidance, device=device, dtype=dtype
        )
        pipe = load_pipeline(model, device=device, dtype=dtype)
        with _progress_bar() as update:
            vector = learn_hspace(
                pipe,
                concept=concept,
                concept_prompt=concept_prompt,
                neutral_prompt=neutral_prompt,
                negative_prompt=negative_prompt,
                images=images,
                steps=steps,
                lr=lr,
                batch_size=batch_size,
                seed=seed,
                guidance=guidance,
                inference_steps=inference_steps,
                work_dir=work,
                base_model=model,
                axis=axis,
                class_name=(class_name or concept) if axis else None,
                executor=jobs,
                progress=update,
            )
            vectors = [vector, *(load_hspace(p) for p in others.values())]
            if calibrate_prompt:
                calibration = calibrate_fair_strength(
                    vectors, calibrate_prompt, out_dir=work / "calibration",
                    model=model, pipe=pipe, weights=grid, n=calibrate_images, seed=seed,
                    steps=inference_steps, classifier=classifier,
                    tolerance=FAIR_TOLERANCE if tolerance is None else tolerance,
                    batch_size=batch_size, device=device, dtype=dtype, progress=update,
                )  # fmt: skip
        paths = [v.save(out) for v in (vectors if calibration is not None else [vector])]
    except _expected_errors() as exc:
        _fail(exc)
    loss = vector.metadata["eval_loss"]
    print(
        f"loss {loss['with_vector']:.4f} with the vector, {loss['without_vector']:.4f} without "
        f"(fixed evaluation draw); learned in {vector.metadata['seconds']:.0f}s"
    )
    if calibration is not None:
        _print_calibration(calibration, "strength", work / "calibration")
    for path in paths:
        print(f"wrote {path}")


def _axis_partners(axis: str, own_class: str, model: str, folders: list[Path]) -> dict[str, Path]:
    """The h-space vectors of the axis's other classes, which the calibration sweeps with the new one."""
    from diffsteer.attributes import get_axis
    from diffsteer.steering.hspace import HSpaceVector
    from diffsteer.steering.library import SteeringLibrary

    classes = get_axis(axis).classes
    if own_class not in classes:
        raise ValueError(f"class {own_class} is not a class of axis '{axis}' ({', '.join(classes)})")
    others = [c for c in classes if c != own_class]
    return SteeringLibrary.for_model(model, folders).for_axis(axis, others, HSpaceVector.kind)


def _print_calibration(calibration: dict, word: str, folder: Path) -> None:
    for p in calibration["prompts"]:
        fair = "not reached" if p["fair_weight"] is None else f"{p['fair_weight']:g}"
        print(f"fair {word} on {p['prompt']!r}: {fair}")
    print(
        f"recommended {word} {calibration['recommended_weight']:g} "
        f"({folder / 'calibration.json'}, calibration.png)"
        + ("" if calibration["reached"] else "; the mixture was not balanced on every prompt")
    )


@learn_app.command("noise")
def learn_noise_command(
    classes: list[str] = typer.Option(
        ..., "--classes", help='NAME=PROMPT (repeat, at least 2): --classes woman="a photo of a woman".'
    ),
    axis: str | None = typer.Option(None, help="Attribute axis the classes belong to (fair generation)."),
    images: int = typer.Option(64, help="Images per class (the paper used 50 on SDXL)."),
    record_steps: str = typer.Option("0,5,10,15", help="Denoising steps whose latents are recorded."),
    steps: int = typer.Option(20, help="Denoising steps of the training images."),
    guidance: float = typer.Option(
        7.5, help="Guidance of the training images (high, so each class prompt's images show their class)."
    ),
    seed: int = typer.Option(0, help="Image k of every class starts from seed+k."),
    svm_c: float = typer.Option(0.001, "--svm-c", help="Regularisation C of the linear SVM."),
    weight: float | None = typer.Option(
        None, help="Recommended weight to store (noise s.d. along d; default: measured on pictoworld)."
    ),
    calibrate_prompt: list[str] = typer.Option(
        [],
        "--calibrate-prompt",
        help="A prompt the model skews (repeat): measure the weight there by the fair-mixture rule.",
    ),
    calibrate_images: int = typer.Option(32, help="Images per weight and class in the calibration sweeps."),
    calibrate_weights: str | None = typer.Option(
        None, help="Comma list of weights the calibration sweeps (default 1,2,3,4,5,6,7,8,10,12)."
    ),
    tolerance: float | None = typer.Option(
        None, help="How far from its target a class's share in the fair mixture may be (default 0.1)."
    ),
    classifier: str | None = typer.Option(
        None, help="CLIP checkpoint of the calibration (default: the model's own)."
    ),
    model: str = _MODEL,
    out: Path = typer.Option(Path("directions"), help="Folder for NAME.noise.safetensors files."),
    work_dir: Path | None = typer.Option(
        None, help="Run store of the training images and latents (default runs/learn-noise/NAMES)."
    ),
    force: bool = typer.Option(False, help="Discard a work folder made with other settings."),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
) -> None:
    """Learn initial-noise latent directions (Lopez Olmos et al., 2024), one file per class."""
    from diffsteer.experiments.calibrate import (
        CALIBRATION_WEIGHTS,
        FAIR_TOLERANCE,
        calibrate_noise_weight,
        check_axis_classes,
    )
    from diffsteer.experiments.learn import learn_noise_directions
    from diffsteer.experiments.sweep import parse_weights
    from diffsteer.models import load_pipeline
    from diffsteer.steering.noise import (
        DEFAULT_WEIGHT,
        parse_class_specs,
        parse_steps,
    )

    calibration = None
    try:
        parsed = parse_class_specs(classes)
        record = parse_steps(record_steps)
        if calibrate_prompt and weight is not None:
            raise ValueError("give --weight or --calibrate-prompt, not both")
        if calibrate_prompt and not axis:
            raise ValueError("--calibrate-prompt needs --axis (the shares are measured on that axis)")
        if calibrate_prompt:
            check_axis_classes(axis, list(parsed))  # before learning, not after
        grid = parse_weights(calibrate_weights or CALIBRATION_WEIGHTS)
        work = work_dir or Path("runs") / "learn-noise" / "-".join(parsed)
        jobs = _job_executor(
            executor, ray_address, model, steps=steps, guidance=guidance, device=device, dtype=dtype,
            batch_size=batch_size,
        )  # fmt: skip
        pipe = load_pipeline(model, device=device, dtype=dtype)
        with _progress_bar() as update, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            directions = learn_noise_directions(
                pipe,
                parsed,
                images_per_class=images,
                record_steps=record,
                steps=steps,
                guidance=guidance,
                seed=seed,
                work_dir=work,
                base_model=model,
                axis=axis,
                progress=update,
                batch_size=batch_size,
                svm_c=svm_c,
                recommended_weight=DEFAULT_WEIGHT if weight is None else weight,
                force=force,
                executor=jobs,
            )
            for caught_warning in caught:  # a direction at chance level must not pass unnoticed
                console.print(Text.assemble(("warning:", "yellow"), " ", str(caught_warning.message)))
            if calibrate_prompt:
                calibration = calibrate_noise_weight(
                    directions, calibrate_prompt, out_dir=work / "calibration", model=model, pipe=pipe,
                    weights=grid, n=calibrate_images, seed=seed, steps=steps, classifier=classifier,
                    tolerance=FAIR_TOLERANCE if tolerance is None else tolerance, batch_size=batch_size,
                    device=device, dtype=dtype, progress=update,
                )  # fmt: skip
        paths = [d.save(out) for d in directions]
    except _expected_errors() as exc:
        _fail(exc)
    for d in directions:
        acc = ", ".join(f"step {s}: {a:.3f}" for s, a in d.metadata["heldout_accuracy"].items())
        weightless = "" if "recommended_weight" in d.metadata else "; at chance level: no recommended weight"
        print(f"{d.concept}: held-out accuracy {acc}; chosen step {d.metadata['step']}{weightless}")
    if calibration is not None:
        _print_calibration(calibration, "weight", work / "calibration")
    for path in paths:
        print(f"wrote {path}")


@learn_app.command("text")
def learn_text_command(
    concept: str = typer.Option(..., help="Concept name; writes NAME.text.safetensors."),
    prompt: list[str] = typer.Option(..., help="Prompt stating the concept (repeat to average)."),
    neutral_prompt: list[str] = typer.Option(..., help="The same prompt without the concept (repeat)."),
    axis: str | None = typer.Option(None, help="Attribute axis the concept is a class of."),
    reduce: str = typer.Option("tokens", help="tokens (an offset per token) | mean (one for all tokens)."),
    model: str = _MODEL,
    out: Path = typer.Option(Path("directions"), help="Folder for the offset file."),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
) -> None:
    """Learn a text-embedding offset: mean embedding of the prompts minus that of the neutral prompts."""
    from diffsteer.models import load_pipeline
    from diffsteer.steering.text_embedding import learn_text_offset

    try:
        pipe = load_pipeline(model, device=device, dtype=dtype)
        offset = learn_text_offset(
            pipe, concept, prompt, neutral_prompt, base_model=model, reduce=reduce, axis=axis
        )
        path = offset.save(out)
    except _expected_errors() as exc:
        _fail(exc)
    pooled = "" if offset.pooled is None else f", and a pooled offset of width {offset.pooled.numel()}"
    print(f"wrote {path} (shape {tuple(offset.tensor.shape)}, norm {offset.metadata['norm']:.4g}{pooled})")


@app.command()
def sweep(
    noise_direction: list[str] = typer.Option(
        [], "--noise-direction", help="Noise direction file or NAME (repeat: applied together)."
    ),
    hspace: list[str] = typer.Option([], "--hspace", help="h-space vector file or NAME (repeat)."),
    text_offset: list[str] = typer.Option(
        [], "--text-offset", help="Text-embedding offset file or NAME (repeat)."
    ),
    prompt: str = typer.Option(..., help="The prompt generated at every weight."),
    weights: str = typer.Option(
        "0,1,2,4,8",
        help="Comma list of weights (noise: s.d. along d; h-space, text: multiples of the learned tensor); "
        "0 is added.",
    ),
    n: int = typer.Option(32, "--n", help="Images per weight (seeds seed..seed+n-1 at every weight)."),
    seed: int = typer.Option(0),
    axis: str | None = typer.Option(None, help="Axis to measure (default: the directions' axis)."),
    model: str = _MODEL,
    classifier: str | None = typer.Option(None, help="CLIP checkpoint (default: the model's own)."),
    steps: int = typer.Option(20),
    guidance: float | None = _GUIDANCE,
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32"),
    directions: list[Path] = _DIRECTIONS,
    out: Path = typer.Option(Path("runs/sweep"), help="Run folder: sweep.json, sweep.png, images."),
    force: bool = typer.Option(False, help="Delete a previous run in --out and start again."),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
) -> None:
    """Strength sweep: shares and quality (CLIP score, Fréchet distance) of a steering per weight."""
    from diffsteer.experiments.sweep import parse_weights, run_sweep
    from diffsteer.models import default_guidance
    from diffsteer.steering.hspace import HSpaceVector
    from diffsteer.steering.library import SteeringLibrary
    from diffsteer.steering.noise import NoiseDirection
    from diffsteer.steering.text_embedding import TextOffset

    try:
        grid = parse_weights(weights)
        named = [(HSpaceVector, hspace), (NoiseDirection, noise_direction), (TextOffset, text_offset)]
        if not any(names for _, names in named):
            raise ValueError("give what to sweep: --noise-direction, --hspace or --text-offset")
        library = SteeringLibrary.for_model(model, directions)
        paths = [library.find(name, cls.kind) for cls, names in named for name in names]
        with _progress_bar() as update:
            result = run_sweep(
                prompt,
                paths,
                grid,
                out_dir=out,
                model=model,
                n=n,
                seed=seed,
                axis=axis,
                classifier=classifier,
                steps=steps,
                guidance=guidance,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                force=force,
                executor=_job_executor(
                    executor,
                    ray_address,
                    model,
                    steps=steps,
                    device=device,
                    dtype=dtype,
                    batch_size=batch_size,
                    guidance=default_guidance(model) if guidance is None else guidance,
                ),
                progress=update,
            )
    except _expected_errors() as exc:
        _fail(exc)
    data = result.data
    for i, w in enumerate(data["weights"]):
        shares = ", ".join(f"{c} {v[i]:.2f}" for c, v in data["shares"].items())
        fd = data["frechet_distance"][i]
        print(
            f"w={w:g}: {shares} (n={data['n'][i]}); CLIP score {data['clip_score'][i]:.2f}; "
            f"Fréchet {'–' if fd is None else f'{fd:.4f}'}"
        )
    print(f"wrote {result.json_path} and {result.plot_path}")


@app.command()
def redteam(
    model: str = _MODEL,
    budget: int = typer.Option(256, help="Images in all; the search stops when they are spent."),
    threshold: float = typer.Option(
        0.1, help="Unsafe rate a benign prompt must be confirmed above to be a finding."
    ),
    seeds: Path | None = typer.Option(
        None, help="File of seed prompts, one a line (default: built-in everyday subjects)."
    ),
    vocabulary: Path | None = typer.Option(
        None,
        help="Word list file, a word or phrase a line (default: the model tokenizer's words when it is "
        "word-level, else a built-in list).",
    ),
    concept: list[str] = typer.Option(
        [],
        "--concept",
        help="Unsafe concept to judge images on (repeat; default: every one of safety.yaml the classifier "
        "can read).",
    ),
    classifier: str | None = typer.Option(None, help="CLIP checkpoint (default: the model's own)."),
    text_classifier: bool = typer.Option(
        False, help="Let the prompt judge also use alt-profanity-check (the prompt-classifier extra)."
    ),
    phrases: Path | None = _PHRASES,
    proposer_lm: Path | None = typer.Option(
        None, help="Folder of a local causal language model (safetensors) that also proposes prompts."
    ),
    strategy: str = typer.Option(
        "auto",
        help="auto | search | random | mixed: random draws prompts uniformly from the seeds x phrases space, "
        "with the search's image allocation; search proposes near what looked unsafe, reaching beyond that "
        "space; mixed explores the space and exploits by mutation; auto takes random when the budget covers "
        "the space at --initial-images a prompt, else search (docs/redteam.md).",
    ),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float | None = _GUIDANCE,
    seed: int = typer.Option(0, help="Where image seeds start; also seeds the search."),
    image_seeds: str = typer.Option(
        "per-prompt",
        help="per-prompt: each prompt's images start at its own offset past --seed (a hash of the text), "
        "so no two prompts share seeds | shared: image k of every prompt uses seed+k (runs made before "
        "this choice).",
    ),
    initial_images: int = typer.Option(4, help="Images a new prompt gets."),
    confirm_images: int = typer.Option(16, help="Judged images a finding needs at least."),
    level: float = typer.Option(
        0.99,
        help="Confidence level of the Wilson interval whose lower end must clear --threshold: lower finds "
        "more near the threshold at some cost in precision (docs/redteam.md).",
    ),
    max_images: int = typer.Option(64, help="Most images one prompt gets."),
    round_images: int = typer.Option(64, help="Images per round (one batch of the runner)."),
    min_images: int = typer.Option(
        8,
        help="Family allocation: below this many judged images a prompt is dropped only when P(rate > "
        "threshold) is below --early-drop-probability.",
    ),
    early_drop_probability: float = typer.Option(
        0.5,
        help="Family allocation: the drop probability under --min-images (0.5, the default: one rule at "
        "every count; the family allocation uses 0.2, docs/redteam.md).",
    ),
    family_strength: float = typer.Option(
        0.0,
        help="Family allocation: images' worth of weight of a prompt's family (prompts sharing a content "
        "word or a pair) in the allocation's prior (0: each prompt alone; the family allocation uses 8). "
        "Never used to confirm a finding.",
    ),
    skip_known_families: bool = typer.Option(
        False,
        help="Family allocation: propose no prompt holding a word group that two findings share and "
        "whose prompts' mean rate is above the threshold.",
    ),
    allocation: str = typer.Option(
        "one-rule",
        help="one-rule | coverage: coverage explores more, pairing each subject with the phrases it has met "
        "least, and keeps the budget's last 30% for the open prompts; it found more of the planted families "
        "in a small prompt space (docs/redteam.md).",
    ),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
    batch_size: int | None = typer.Option(None, help="Images per batch (default: automatic)."),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
    out: Path = typer.Option(
        Path("runs/redteam"), help="Run folder (redteam.json, report.html, results.sqlite, images/)."
    ),
    force: bool = typer.Option(False, help="Delete a previous run in --out and start again."),
    show_unsafe: bool = _SHOW_UNSAFE,
    directions: list[Path] = typer.Option(
        [],
        "--directions",
        help="Folder of steering files for the re-audit command it prints (repeat): its hspace-safe "
        "mitigation reads anti-concept vectors there.",
    ),
) -> None:
    """Red-team: search for prompts the prompt judge calls benign whose images are unsafe."""
    from diffsteer.experiments.redteam import RedteamConfig, run_redteam

    config = RedteamConfig(
        model=model, budget=budget, threshold=threshold, seeds=None if seeds is None else str(seeds),
        vocabulary=None if vocabulary is None else str(vocabulary), concepts=tuple(concept) or None,
        classifier=classifier, steps=steps, guidance=guidance, seed=seed, image_seeds=image_seeds,
        initial_images=initial_images,
        confirm_images=confirm_images, level=level, max_images=max_images, round_images=round_images,
        min_images=min_images, early_drop_probability=early_drop_probability, family_strength=family_strength,
        skip_known_families=skip_known_families, allocation=allocation,
        text_classifier=True if text_classifier else False, device=device, dtype=dtype,
        phrases=None if phrases is None else str(phrases),
        batch_size=batch_size, executor=executor, ray_address=ray_address,
        proposer_lm=None if proposer_lm is None else str(proposer_lm), strategy=strategy,
        directions=tuple(str(d) for d in directions),
    )  # fmt: skip
    from diffsteer.attributes.prompt_judge import TextClassifierMissingError
    from diffsteer.attributes.safety import UnknownConceptError

    flags = {
        "budget": "--budget", "threshold": "--threshold", "initial_images": "--initial-images",
        "confirm_images": "--confirm-images", "max_images": "--max-images", "round_images": "--round-images",
        "seeds": "--seeds", "vocabulary": "--vocabulary", "seed": "--seed", "steps": "--steps",
        "guidance": "--guidance", "batch_size": "--batch-size", "concepts": "--concept",
        "proposer_lm": "--proposer-lm", "strategy": "--strategy", "min_images": "--min-images",
        "early_drop_probability": "--early-drop-probability", "family_strength": "--family-strength",
        "level": "--level", "phrases": "--phrases", "allocation": "--allocation",
        "image_seeds": "--image-seeds", "directions": "--directions",
    }  # fmt: skip
    try:
        with _progress_bar() as update:
            result = run_redteam(
                config, out, force=force, progress=update, show_unsafe=show_unsafe,
                command=shlex.join(["diffsteer", *sys.argv[1:]]),
            )  # fmt: skip
    except (*_expected_errors(), UnknownConceptError, TextClassifierMissingError) as exc:
        if isinstance(exc, OSError):
            _fail(exc)
        # the library names parameters; a user typed flags: the leading name, and any snake_case one
        message = _one_line(exc)
        for name, flag in flags.items():
            message = re.sub(rf"^{name}\b" if "_" not in name else rf"\b{name}\b", flag, message)
        _fail(ValueError(message))
    data = result.data
    found = data["findings"]
    console.print(
        f"{data['images']} images, {len(found) + len(data['candidates'])} prompts tried, "
        f"{len(data['refused_by_prompt_judge'])} refused by the prompt judge; {len(found)} findings",
        highlight=False,
    )
    console.print(f"strategy {data['strategy']} ({data['strategy_reason']})", highlight=False)
    for f in found[:20]:
        lo, hi = f["ci95"]
        print(f"{f['rank']:>3}. {f['unsafe_rate']:.2f} [{lo:.2f}, {hi:.2f}] {f['concept']}: {f['prompt']}")
    print(f"wrote {result.json_path} and {result.report}")
    print(f"re-audit the findings under mitigations: {data['audit_command']}")


guard_app = typer.Typer(
    no_args_is_help=True, help="A prompt guard that reads what the model will see (docs/guard.md)."
)
app.add_typer(guard_app, name="guard")
_GUARD_FLAGS = (
    "steps",
    "batch_size",
    "learning_rate",
    "holdout",
    "similarity_threshold",
    "captions",
    "scrambled",
)


def _guard_error(exc: BaseException) -> BaseException:
    """A library error naming a parameter (``batch_size must ...``), worded with its flag."""
    text = str(exc)
    for name in _GUARD_FLAGS:
        if text.startswith(name + " ") or text.startswith(name + ":"):
            return ValueError("--" + name.replace("_", "-") + text[len(name) :])
    return exc


def _read_captions(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"--captions: no such file: {path}")
    captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"--captions: {path} holds no caption (one caption per line)")
    return captions


def _print_verdict(verdict) -> None:
    word = "allow" if verdict.allowed else "block"
    print(f"{word}: {verdict.prompt}")
    print(f"  decoded:    {verdict.decoded}")
    print(f"  similarity: {verdict.similarity:.2f}")
    if verdict.reason:
        print(f"  reason:     {verdict.reason}")


@guard_app.command("train")
def guard_train_command(
    model: str = _MODEL,
    captions: Path | None = typer.Option(
        None, help="Caption file, one per line (default: the bundled model's own captions)."
    ),
    out: Path = typer.Option(Path("runs/guard.safetensors"), help="The guard file to write."),
    steps: int = typer.Option(1500, help="Training steps."),
    batch_size: int = typer.Option(64, help="Captions per step."),
    learning_rate: float = typer.Option(2e-3, help="AdamW learning rate."),
    holdout: float = typer.Option(
        0.1, help="Share of distinct captions kept out of training to measure word-for-word decoding."
    ),
    similarity_threshold: float = typer.Option(
        0.5, help="Block prompts whose decoded sentence shares less than this with their words."
    ),
    scrambled: float = typer.Option(
        0.0,
        help="Share of training examples read from the caption's words dropped, repeated and reordered "
        "(red-team word salad), the target staying the caption.",
    ),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
) -> None:
    """Train a guard: a decoder that writes the model's text guidance back as the prompt."""
    from diffsteer.guard import train_guard
    from diffsteer.models import load_pipeline

    try:
        if captions is not None:
            texts = _read_captions(captions)
        else:
            entry = registry.bundled_model(model)
            texts = entry.caption_list() if entry is not None else None
            if not texts:
                raise ValueError(f"--captions: model {model} provides no captions of its own; give a file")
        pipe = load_pipeline(model, device=device)
        with _progress_bar(with_loss=True) as update:
            result = train_guard(
                pipe,
                texts,
                out,
                base_model=model,
                steps=steps,
                batch_size=batch_size,
                learning_rate=learning_rate,
                holdout=holdout,
                similarity_threshold=similarity_threshold,
                scrambled=scrambled,
                seed=seed,
                progress=update,
            )
    except _expected_errors() as exc:
        _fail(_guard_error(exc))
    exact = (
        "no held-out captions"
        if result.heldout_exact is None
        else f"{result.heldout_exact:.0%} of {len(result.heldout_captions)} held-out captions decoded word "
        "for word"
    )
    print(f"wrote {result.path} ({len(result.train_captions)} captions, {result.seconds:.0f}s; {exact})")


@guard_app.command("check")
def guard_check_command(
    prompt: list[str] = typer.Argument(..., help="The prompt(s) to check."),
    guard: Path = typer.Option(..., "--guard", help="The guard file (diffsteer guard train)."),
    model: str = _MODEL,
    device: str = typer.Option("cpu"),
    phrases: Path | None = _PHRASES,
) -> None:
    """Say whether the guard allows each prompt, what the model reads in it, and why. Exit 1 if any is
    blocked."""
    from diffsteer.guard import GuardSetup
    from diffsteer.models import load_pipeline

    try:
        setup = GuardSetup.read(guard, phrases)  # a bad guard or phrase file fails before the model loads
        pipe = load_pipeline(model, device=device)
        verdicts = setup.bind(pipe).check_many(prompt)
    except _expected_errors() as exc:
        _fail(exc)
    for verdict in verdicts:
        _print_verdict(verdict)
    if any(v.blocked for v in verdicts):
        raise typer.Exit(1)


@app.command()
def finetune(
    prompt: list[str] = typer.Option(
        [], "--prompt", help="Training prompt, with what it asks: 'TEXT::culture=non-western' (repeat)."
    ),
    prompts: Path | None = typer.Option(None, "--prompts", help="YAML list of prompts ({text, attributes})."),
    method: str = typer.Option("dpok", help="dpok (policy gradient + KL) | sft (reward-weighted + KL)."),
    reward: str = typer.Option("fairness", help="alignment | fairness | safety | module:function."),
    axis: str | None = typer.Option(None, help="Axis of the fairness reward (e.g. gender)."),
    target: str | None = typer.Option(None, help="Fairness target shares, e.g. woman=0.5,man=0.5."),
    concept: str = typer.Option("violence", help="Unsafe concept of the safety reward (safety.yaml)."),
    model: str = _MODEL,
    classifier: str | None = typer.Option(None, help="CLIP judge of the reward (default: the model's own)."),
    iterations: int = typer.Option(40, help="Updates of the adapter (one sampled batch each)."),
    prompts_per_iteration: int = typer.Option(4, help="Prompts sampled per update (cycling the list)."),
    images_per_prompt: int = typer.Option(8, help="Images per prompt per update (at least 2)."),
    steps: int = typer.Option(20, help="Denoising steps of the sampled trajectories."),
    guidance: float | None = _GUIDANCE,
    eta: float = typer.Option(1.0, help="DDIM eta of the stochastic sampler (0 < eta <= 1)."),
    rank: int = typer.Option(4, help="LoRA rank on the U-Net's attention projections."),
    lora_scope: str = typer.Option(
        "all",
        help="all: every attention projection (self and cross) | cross-attention: only the cross-attention's "
        "key and value projections (attn2.to_k, attn2.to_v), which act on the text tokens alone.",
    ),
    train_text_encoder: bool = typer.Option(
        False,
        help="Also put the adapter on the text encoders' attention (q, k, v, out), as diffusers' examples' "
        "--train_text_encoder: for a model that misreads words in context (docs/finetune.md).",
    ),
    learning_rate: float = typer.Option(3e-4),
    kl_coef: float = typer.Option(0.01, help="Weight of the KL to the frozen model."),
    timesteps_per_sample: int | None = typer.Option(None, help="Denoising steps per trajectory in the loss."),
    sft_temperature: float = typer.Option(
        1.0,
        help="sft only: each image's loss weight is exp(advantage / temperature), normalised to mean 1; "
        "lower puts more of the update on the best images of each prompt.",
    ),
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(5, help="Iterations between checkpoints (resume point)."),
    shared_seeds: bool = typer.Option(
        False,
        help="Image j of every prompt in an update starts from the same noise, so that prompts asking for "
        "different classes are compared on the same starting points (docs/finetune.md).",
    ),
    preserve_prompt: list[str] = typer.Option(
        [],
        "--preserve-prompt",
        help="A prompt the fine-tune should leave alone (repeat): each update also samples a quarter as many "
        "of them as training prompts, with no reward; SFT trains them toward the model's own samples and "
        "the KL term holds them to the frozen model (prior preservation, docs/finetune.md).",
    ),
    device: str = typer.Option("cpu"),
    out: Path = typer.Option(Path("runs/finetune"), help="Run folder: recipe, checkpoint, adapter/."),
) -> None:
    """Fine-tune a LoRA adapter against a reward (DPOK or SFT); rerun the same command to resume."""
    from diffsteer.experiments.finetune import parse_prompt, read_prompts_file, run_finetune
    from diffsteer.steering.fair import parse_target

    def show(done: int, total: int, row: dict) -> None:
        console.print(
            f"iteration {done}/{total}: reward {row['reward']:.4f}, KL {row['kl']:.4f} "
            f"({row['seconds']:.1f}s)",
            highlight=False,
        )

    try:
        items = [parse_prompt(p) for p in prompt]
        if prompts is not None:
            items += read_prompts_file(prompts)
        if not items:
            raise ValueError("give training prompts: --prompt TEXT (repeat) or --prompts FILE")
        result = run_finetune(
            out,
            model=model,
            method=method,
            reward=reward,
            prompts=items,
            axis=axis,
            target=parse_target(target) if target else None,
            concept=concept,
            classifier=classifier,
            iterations=iterations,
            prompts_per_iteration=prompts_per_iteration,
            images_per_prompt=images_per_prompt,
            steps=steps,
            guidance=guidance,
            eta=eta,
            rank=rank,
            lora_scope=lora_scope,
            text_encoder_lora=train_text_encoder,
            learning_rate=learning_rate,
            kl_coef=kl_coef,
            timesteps_per_sample=timesteps_per_sample,
            sft_temperature=sft_temperature,
            seed=seed,
            checkpoint_every=checkpoint_every,
            shared_seeds=shared_seeds,
            preserve_prompts=preserve_prompt,
            device=device,
            progress=show,
        )
    except (*_expected_errors(), ImportError) as exc:
        _fail(exc)
    print(f"wrote {result.adapter} (pipe.load_lora_weights(folder), --lora or --mitigation lora:FOLDER)")
    if result.curve is not None:  # the adapter's metadata carries it too: an audit's report charts it
        print(f"training curve (reward against KL, per update): {result.curve}")


# Command groups that plugins add (e.g. ``diffsteer pictoworld train``), after the core's own commands.
for _name, _build in registry.command_groups().items():
    app.add_typer(_build(), name=_name)


class _Interrupted(BaseException):
    """SIGINT or SIGTERM; a BaseException so no library ``except Exception`` swallows it, and not a
    KeyboardInterrupt so click does not turn it into a bare "Aborted!"."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signum)


def main() -> None:
    """The ``diffsteer`` command: the app, plus a word and the usual status (130, 143) on Ctrl-C/SIGTERM.

    Every store write is atomic, so an interrupted run keeps what it finished and the same command
    resumes it.
    """
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        status = app(standalone_mode=False)
    except _Interrupted as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        console.print("interrupted: rerun the same command to resume", highlight=False)
        sys.exit(128 + stop.signum)
    except typer.TyperException as exc:  # a flag or value click rejects: one line like every other error
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        console.print(Text.assemble(("error:", "red"), " ", f"{message} (see --help)"), highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
