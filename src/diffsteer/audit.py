"""The audit: benchmark prompts x mitigations x seeds -> images -> labels -> bias metrics -> report.

Every stage reads and writes the run store, so an interrupted audit picks up where it stopped:
images already made are not made again, labels already computed are not computed again.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffsteer.attributes import Axis, ClipZeroShotClassifier, get_axis
from diffsteer.attributes.tally import NOT_CLASSIFIED, tally
from diffsteer.benchmarks import load_benchmark
from diffsteer.benchmarks.spec import Benchmark
from diffsteer.experiments.mitigations import (
    check_lora_mitigations,
    check_mitigations,
    mitigation_steering,
    plan_image,
)
from diffsteer.metrics import summarize_labels
from diffsteer.registry import bundled_model, default_model
from diffsteer.runs.executors import GeneratorSpec, check_executor, make_executor
from diffsteer.runs.runner import generate_missing, label_missing
from diffsteer.runs.store import ImageRecord, RunStore, check_out_dir, job_key
from diffsteer.steering.preset import SteeringSpec
from diffsteer.summary import (
    SUMMARY_NAME,
    AggregateDetail,
    DrChange,
    GuardSection,
    ModelInfo,
    PromptDetail,
    ResultRow,
    RunConfig,
    SafetySection,
    Summary,
    write_summary,
)

# stage ("generate" | "classify"), done, total
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AuditConfig:
    """Everything that defines an audit run. ``None`` means "the default for this model/benchmark"."""

    model: str = field(default_factory=default_model)  # the first registered bundled model
    benchmark: str | None = None
    category: str | None = None
    prompt_types: tuple[str, ...] = ("neutral",)
    axes: tuple[str, ...] | None = None
    culture_classes: tuple[str, ...] | None = None
    images_per_prompt: int | None = None
    steps: int = 20
    guidance: float | None = None  # None: the model's own scale (a bundled model's registered one, else 7.5)
    seed: int = 0
    mitigations: tuple[str, ...] = ("none",)
    steering: SteeringSpec | None = None  # the "steered" mitigation: vectors, directions, fair, presets
    hspace_branches: str = "conditional"  # h-space vectors on the conditional pass, or on both
    classifier: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None  # None: automatic (16 on a CPU, from free memory on a GPU)
    executor: str = "local"  # local | ray
    ray_address: str | None = None  # an existing Ray cluster; None: Ray starts on this machine
    compile: bool = False  # torch.compile the U-Net

    def identity(self) -> dict[str, Any]:
        """The part of the config that changes results (where and how fast it runs does not belong here)."""
        d = asdict(self)
        for key in ("device", "batch_size", "executor", "ray_address", "compile"):
            d.pop(key)
        d["steering"] = self.steering.to_dict() if self.steering is not None else None
        return d


def default_benchmark(model: str) -> str:
    """The benchmark a bundled model registered as its own, else ENTIGEN."""
    entry = bundled_model(model)
    return entry.benchmark if entry is not None and entry.benchmark is not None else "entigen"


@dataclass
class AuditResult:
    run_dir: Path
    summary: Summary  # summary.json, typed (``summary.to_dict()`` is the file's content)
    report: Path
    generated: int = 0
    classified: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def resolve(config: AuditConfig) -> tuple[AuditConfig, Benchmark, list[Axis]]:
    """Fill the config's defaults and validate it before any model is loaded."""
    from dataclasses import replace

    from diffsteer.attributes import builtin_axes
    from diffsteer.models import default_classifier, default_guidance

    bench_name = config.benchmark or default_benchmark(config.model)
    bench = load_benchmark(bench_name, known_axes=builtin_axes().keys())
    bench = bench.select(category=config.category, kinds=config.prompt_types or None)
    axes_names = config.axes or bench.axes
    axes = [get_axis(name, culture_classes=config.culture_classes) for name in axes_names]
    mitigations = tuple(config.mitigations)
    if config.steering is not None and not config.steering.is_empty and "steered" not in mitigations:
        mitigations += ("steered",)  # steering options ask for a comparison with the listed mitigations
    check_mitigations(mitigations)
    for m in mitigations:
        # fails early on a bad combination, before any model is loaded
        mitigation_steering(m, tuple(a.name for a in axes), config.steering)
    if config.images_per_prompt is not None and config.images_per_prompt < 1:
        raise ValueError(f"--images-per-prompt must be at least 1, got {config.images_per_prompt}")
    if config.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {config.steps}")
    if config.batch_size is not None and config.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.guidance is not None and config.guidance < 0:
        raise ValueError(f"--guidance must be at least 0, got {config.guidance}")
    check_executor(config.executor)
    from diffsteer.generate import check_hspace_branches

    check_hspace_branches(config.hspace_branches)
    resolved = replace(
        config,
        benchmark=bench_name,
        axes=tuple(a.name for a in axes),
        mitigations=mitigations,
        classifier=config.classifier or default_classifier(config.model),
        guidance=config.guidance if config.guidance is not None else default_guidance(config.model),
    )
    return resolved, bench, axes


_SEED_LIMIT = 2**63  # seeds are stored as 64-bit signed integers


def check_run_inputs(
    config: AuditConfig, bench: Benchmark, out_dir: Path | str, reference: str | Path | None = "auto"
) -> None:
    """Everything about a resolved config that can fail, checked before the run database exists.

    A mistake found here costs seconds and leaves nothing behind; found after generation it would
    cost the whole run, and a database created first would pin the wrong config for the corrected
    command. Checks seeds, device and dtype, the model (resolved, not loaded), the classifier
    (loaded), the reference folder and whether ``out_dir`` can be written.
    """
    from diffsteer.models import check_device, check_dtype, check_model

    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {config.seed}")
    most = max(
        (spec.seed_offset + (config.images_per_prompt or bench.images_for(spec)) for spec in bench.prompts),
        default=1,
    )
    if config.seed + most > _SEED_LIMIT:
        raise ValueError(
            f"--seed {config.seed} is too large: image k uses seed+k (plus a prompt's own offset), "
            f"and seed+{most} must stay below 2^63"
        )
    check_dtype(config.dtype)
    check_device(config.device)
    check_out_dir(out_dir)
    check_model(config.model)
    _check_named_steering_files(config)
    if reference is not None and str(reference) != "auto":
        from diffsteer.reference import ReferenceError, load_reference_folder

        try:
            load_reference_folder(reference)
        except ReferenceError as exc:
            raise ReferenceError(f"--reference {reference}: {exc}") from None
    # the classifier labels every image: a bad one must fail now, not after the generation
    ClipZeroShotClassifier.from_pretrained(config.classifier, device="cpu")


def _check_named_steering_files(config: AuditConfig) -> None:
    """Find and read every steering file named in the config (whether it fits the model is checked
    once the model is loaded, still before any image)."""
    if config.steering is None:
        return
    from diffsteer.steering.library import SteeringLibrary
    from diffsteer.steering.steerer import steering_loader

    library = SteeringLibrary.for_model(config.model, config.steering.directions)
    for kind in ("hspace", "noise", "text"):
        for item in getattr(config.steering, kind):
            steering_loader(kind)(library.find(item.name, kind))


def build_steerers(config: AuditConfig, generator: Any, fingerprint: str) -> dict[str, Any]:
    """One steerer per steering mitigation, with its files found, loaded and checked against the model."""
    from diffsteer.attributes import builtin_axes
    from diffsteer.steering.library import SteeringLibrary
    from diffsteer.steering.steerer import Steerer

    axis_classes = {name: axis.classes for name, axis in builtin_axes().items()}
    for name in config.axes or ():
        axis_classes[name] = get_axis(name, culture_classes=config.culture_classes).classes
    extra = config.steering.directions if config.steering is not None else ()
    library = SteeringLibrary.for_model(config.model, extra)
    steerers = {}
    for mitigation in config.mitigations:
        spec = mitigation_steering(mitigation, config.axes or (), config.steering)
        if spec is not None:
            steerers[mitigation] = Steerer(
                spec, generator, fingerprint=fingerprint, library=library, axis_classes=axis_classes
            )
    check_lora_mitigations(config.mitigations, generator.pipe)  # LoRA fine-tunes: same base model?
    return steerers


def _plan(
    config: AuditConfig,
    bench: Benchmark,
    fingerprint: str,
    steerers: dict[str, Any] | None = None,
    weights: str = "",
) -> list[tuple[ImageRecord, Any]]:
    jobs = []
    for mitigation in config.mitigations:
        for spec in bench.prompts:
            n = config.images_per_prompt or bench.images_for(spec)
            for k in range(n):
                seed = config.seed + spec.seed_offset + k
                planned = plan_image(mitigation, spec, config.axes or (), seed, steerers)
                req = planned.request
                key = job_key(
                    # two mitigations that steer alike, or two prompt ids sharing a text, are still
                    # distinct jobs: a shared key would leave the second one without images
                    mitigation=mitigation,
                    prompt_id=spec.id,
                    model=fingerprint,
                    weights=weights,  # retrained weights of the same architecture make other images
                    model_ref=config.model,
                    prompt=req.prompt,
                    negative=req.negative_prompt,
                    seed=seed,
                    steps=config.steps,
                    guidance=config.guidance,
                    dtype=config.dtype,
                    steering=planned.steering,
                    # images without a vector do not depend on where vectors go: keep their keys
                    **({"hspace_branches": config.hspace_branches} if req.hspace is not None else {}),
                )
                record = ImageRecord(
                    key=key,
                    mitigation=mitigation,
                    prompt_id=spec.id,
                    prompt=spec.text,
                    final_prompt=req.prompt,
                    seed=seed,
                    image_index=k,
                    steering=planned.steering,
                    model=config.model,
                    status="ok",
                )
                jobs.append((record, req))
    return jobs


def generator_spec(config: AuditConfig) -> GeneratorSpec:
    """How every executor builds this run's generator (a local folder by absolute path, for workers)."""
    model = config.model
    folder = Path(model).expanduser()
    if bundled_model(model) is None and folder.exists():
        model = str(folder.resolve())
    return GeneratorSpec(
        model=model,
        steps=config.steps,
        guidance=config.guidance,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
        compile=config.compile,
        hspace_branches=config.hspace_branches,
    )


def run_audit(
    config: AuditConfig,
    out_dir: Path | str,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    reference: str | Path | None = "auto",
    command: str | None = None,
    show_unsafe: bool = False,
    guard: Path | str | None = None,
    phrases: Path | str | None = None,
) -> AuditResult:
    """Run (or resume) an audit into ``out_dir`` and write summary.json and report.html there.

    ``reference``: labelled images to check the classifier against (a folder with labels.csv;
    ``"auto"``: the reference set a bundled model registered, none otherwise). ``command``: the command
    line to record in ``command.txt`` and the report's provenance. ``show_unsafe``: the report shows
    thumbnails that a judge calls unsafe unblurred. ``guard``: a guard file; no image is made for a
    prompt it blocks, and ``summary["guard"]`` lists those prompts with the reason. ``phrases``: a
    user's phrase file that the guard's judge reads beside safety.yaml (only with ``guard``).
    """

    from diffsteer.models import describe_model

    started = time.time()
    report_progress = progress or (lambda *a: None)
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(msg)

    if phrases is not None and guard is None:
        raise ValueError("phrases: a phrase file is read by the guard's judge; give a guard file too")
    if guard is not None:
        from diffsteer.guard import GuardSetup

        # local files, read first: a bad one fails before the model, the classifier or the run
        guard_setup = GuardSetup.read(guard, phrases)
    config, bench, axes = resolve(config)
    check_run_inputs(config, bench, out_dir, reference)
    store = RunStore.open(out_dir, config.identity(), resume=resume, force=force)
    try:
        if force or store.created or store.config_changed:
            _invalidate_published(Path(out_dir))
        if command is not None:
            from diffsteer.provenance import COMMAND_FILE
            from diffsteer.runs.atomic import atomic_write_text

            atomic_write_text(Path(out_dir) / COMMAND_FILE, command + "\n")
    except BaseException:
        _discard_failed_start(store)
        raise
    try:
        spec = generator_spec(config)
        # a Ray driver only plans (fingerprint, shapes, tokenizers): it loads the model on its CPU
        generator = (spec if config.executor == "local" else spec.for_planning()).build()
        model_info = describe_model(generator.pipe, config.model)
        steerers = build_steerers(config, generator, model_info["fingerprint"])
        jobs = _plan(config, bench, model_info["fingerprint"], steerers, weights=model_info["weights"])
        screened = None
        if guard is not None:
            from diffsteer.guard.screen import screen_jobs

            jobs, screened = screen_jobs(guard_setup.bind(generator.pipe), jobs)
            if not jobs:
                raise ValueError(f"--guard {guard} blocks every prompt of the benchmark; nothing to audit")
        done = store.done_keys()
        todo = [(rec, req) for rec, req in jobs if rec.key not in done]
        truncated_prompts = sorted({req.prompt for _, req in todo if generator.is_truncated(req.prompt)})
        for prompt in truncated_prompts:
            _warn(f"prompt longer than the text encoder's limit, truncated: {prompt[:80]!r}")
        executor = make_executor(
            config.executor,
            spec,
            generator=generator if config.executor == "local" else None,
            ray_address=config.ray_address,
        )
        del generator  # a Ray run frees the driver's planning copy of the model here
        generated = generate_missing(store, jobs, executor, progress=report_progress)
        del executor

        planned_keys = {rec.key for rec, _ in jobs}
        classified = label_missing(
            store,
            config.classifier,
            axes,
            lambda: ClipZeroShotClassifier.from_pretrained(config.classifier, device=config.device),
            keys=planned_keys,
            progress=report_progress,
        )
        summary = build_summary(store, config, axes, planned_keys, model_info)
        if screened is not None:
            summary.guard = GuardSection.from_dict(screened)
        from diffsteer.experiments.finetune import finetune_section

        curves = finetune_section(config.mitigations)  # LoRA adapters' reward-KL curves
        if curves is not None:  # (an audit without adapters keeps summary.json as it was)
            summary.finetune = curves
        from diffsteer.assess import assess_run  # the sections that judge the audit itself

        assess_run(store, summary, planned=planned_keys, reference=reference, device=config.device)
        run_dir = Path(out_dir)
        write_summary(run_dir, summary)  # first: a report that fails to render loses nothing computed
        from diffsteer.report import write_report

        try:
            report = write_report(run_dir, store=store, summary=summary, show_unsafe=show_unsafe)
        except Exception as exc:  # noqa: BLE001  (the audit is computed and saved; only the page failed)
            report = run_dir / "report.html"
            _warn(f"the report could not be written ({type(exc).__name__}: {exc}); summary.json is complete")
    except BaseException:
        # a start that failed before its first image (a model that does not load, a steering file
        # that does not fit) leaves no database to pin its config on the corrected command
        _discard_failed_start(store)
        raise
    finally:
        store.close()
    return AuditResult(
        run_dir=Path(out_dir),
        summary=summary,
        report=report,
        generated=generated,
        classified=classified,
        seconds=time.time() - started,
        warnings=warnings,
    )


def _discard_failed_start(store: RunStore) -> None:
    """Remove a run this start created and that holds no image yet, with the command.txt it wrote."""
    from diffsteer.provenance import COMMAND_FILE

    if store.created and not store.done_keys():
        with contextlib.suppress(FileNotFoundError):
            (store.run_dir / COMMAND_FILE).unlink()
    store.discard_if_unused()


def _invalidate_published(run_dir: Path) -> None:
    """Delete the summary and report of an earlier run before its results are replaced.

    Otherwise a forced or reconfigured run that is interrupted would leave them describing a run that
    no longer exists, and ``report``/``compare`` would trust them.
    """
    from diffsteer.report import REPORT_NAME

    for name in (SUMMARY_NAME, REPORT_NAME):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def _result_row(mitigation, axis, prompt, counts, n_dropped, bias, dr, dr_ci) -> ResultRow:
    """One row of summary.json's ``results``: exactly the documented keys (prompt None = aggregate)."""
    return ResultRow(
        mitigation=mitigation,
        axis=axis,
        prompt=prompt,
        counts=counts,
        n_dropped=n_dropped,
        entigen_bias=bias,
        deviation_ratio=dr,
        deviation_ratio_ci95=list(dr_ci) if dr_ci else None,
    )


# How summary.json's deviation ratios are computed, stated once in the file (docs/intervals.md).
STATISTICS_NOTE = {
    "deviation_ratio": "bias-corrected estimate (unbiased squared class deviations); the plain plug-in is "
    "details[].plugin_deviation_ratio",
    "deviation_ratio_ci95": "per prompt: Wilson share box mapped onto DR; mean over prompts: spread by "
    "seed (every prompt of a seed redrawn together) minus the plug-in's bias bounds; coverage checked "
    "by simulation in benchmarks/coverage.py",
    "resampling": "by seed",
    "docs": "docs/intervals.md",
}


def _seed_labels(recs: Sequence[ImageRecord], prompts: list[str], axis: Axis, labels: dict) -> Any:
    """(P, S) class index of each prompt's image on seed index s (its image_index), -1 without a label."""
    import numpy as np

    index = {c: i for i, c in enumerate(axis.classes)}
    n_seeds = max((r.image_index for r in recs), default=-1) + 1
    matrix = np.full((len(prompts), n_seeds), -1, dtype=np.int64)
    row = {p: i for i, p in enumerate(prompts)}
    for r in recs:
        lab = labels.get((r.key, axis.name))
        if r.status == "ok" and lab is not None and lab.reason is None and lab.label in index:
            matrix[row[r.prompt], r.image_index] = index[lab.label]
    return matrix


def _outcome(record: ImageRecord, label: Any) -> tuple[str | None, str | None]:
    """(label, drop reason) of one image on one axis, from the store."""
    if record.status != "ok":
        return None, record.drop_reason
    if label is None:
        return None, NOT_CLASSIFIED
    return label.label, label.reason


def build_summary(
    store: RunStore, config: AuditConfig, axes: Sequence[Axis], planned: set[str], model_info: dict
) -> Summary:
    """summary.json: a ``results`` row per (mitigation, axis, prompt) and an aggregate row (prompt null).

    ``deviation_ratio`` and ``deviation_ratio_ci95`` are the bias-corrected estimate and its interval,
    the aggregate's resampled by seed; ``details`` keeps the plain plug-in values and, per prompt, the
    labels by seed (so ``diffsteer compare`` can pair two runs on the same seeds).
    """
    images = [r for r in store.images() if r.key in planned]
    labels = {(lab.key, lab.axis): lab for lab in store.labels(config.classifier)}
    results: list[ResultRow] = []
    details: list[PromptDetail | AggregateDetail] = []
    by_seed_of: dict[tuple[str, str], tuple[list[str], Any]] = {}
    for mitigation in config.mitigations:
        recs = [r for r in images if r.mitigation == mitigation]
        prompts = list(dict.fromkeys(r.prompt for r in recs))
        seeds = {}
        for r in recs:
            seeds.setdefault(r.prompt, {})[r.image_index] = r.seed
        for axis in axes:
            per_prompt = {p: tally(axis) for p in prompts}
            whole = tally(axis)  # the drop reasons by kind, over prompts
            for r in recs:
                outcome = _outcome(r, labels.get((r.key, axis.name)))
                per_prompt[r.prompt].add(*outcome)
                whole.add(*outcome)
            dropped = {p: t.dropped for p, t in per_prompt.items()}
            uncertain = {p: t.uncertain for p, t in per_prompt.items()}
            reasons = whole.reasons
            by_seed = _seed_labels(recs, prompts, axis, labels)
            by_seed_of[(mitigation, axis.name)] = (prompts, by_seed)
            m = summarize_labels(by_seed, axis.classes, prompts, seed=config.seed)
            for i, pm in enumerate(m.prompts):
                results.append(
                    _result_row(
                        mitigation,
                        axis.name,
                        pm.prompt,
                        pm.counts,
                        dropped[pm.prompt],
                        pm.entigen_bias,
                        pm.deviation_ratio,
                        pm.deviation_ratio_ci95,
                    )
                )
                known = sorted(seeds.get(pm.prompt, {}).items())
                classes_by_seed = by_seed[i, [k for k, _ in known]]
                details.append(
                    PromptDetail(
                        mitigation=mitigation,
                        axis=axis.name,
                        prompt=pm.prompt,
                        n_uncertain=uncertain[pm.prompt],
                        kl_to_uniform=pm.kl,
                        plugin_deviation_ratio=pm.plugin_deviation_ratio,
                        plugin_deviation_ratio_ci95=_as_list(pm.plugin_deviation_ratio_ci95),
                        detectable_deviation_ratio=pm.detectable_deviation_ratio,
                        entigen_label=m.entigen_label,
                        # the class of each image by seed (null: uncertain, dropped or unlabelled)
                        seeds=[seed for _, seed in known],
                        labels=[axis.classes[c] if c >= 0 else None for c in classes_by_seed],
                    )
                )
            results.append(
                _result_row(
                    mitigation,
                    axis.name,
                    None,
                    m.counts,
                    sum(dropped.values()),
                    m.entigen_bias,
                    m.mean_deviation_ratio,
                    m.mean_deviation_ratio_ci95,
                )
            )
            details.append(
                AggregateDetail(
                    mitigation=mitigation,
                    axis=axis.name,
                    prompt=None,
                    n_uncertain=sum(uncertain.values()),
                    kl_to_uniform=m.mean_kl,
                    entigen_bias_ci95=_as_list(m.entigen_bias_ci95),
                    entigen_label=m.entigen_label,
                    plugin_deviation_ratio=m.plugin_mean_deviation_ratio,
                    plugin_deviation_ratio_ci95=_as_list(m.plugin_mean_deviation_ratio_ci95),
                    resampled_by=m.resampled_by,
                    drop_reasons=reasons,
                )
            )
    _changes_against_baseline(details, by_seed_of, axes, config)
    from diffsteer.attributes.safety import safety_summary

    return Summary(
        config=RunConfig.from_dict(config.identity()),
        model=ModelInfo.from_dict(model_info),
        classifier=config.classifier,
        images=len(images),
        statistics=STATISTICS_NOTE,
        results=results,
        details=details,
        # unsafe rates of the safety axes
        safety=SafetySection.from_dict(
            safety_summary([r.to_dict() for r in results], [d.to_dict() for d in details])
        ),
    )


def _changes_against_baseline(
    details: list[PromptDetail | AggregateDetail], by_seed_of: dict, axes: Sequence[Axis], config: AuditConfig
) -> None:
    """Each mitigation's change of the mean DR against the first one (the baseline), paired by seed.

    Every mitigation draws image k of a prompt from the same seed (seed + the prompt's offset + k), so
    one redraw of seed indices takes both mitigations' images of those seeds; goes into the aggregate
    details row as ``dr_change_vs_baseline``.
    """
    import numpy as np

    from diffsteer.metrics import mean_difference_interval, resample_by_seed

    baseline = config.mitigations[0] if config.mitigations else None
    classes = {a.name: len(a.classes) for a in axes}
    for d in details:
        if not isinstance(d, AggregateDetail) or d.mitigation == baseline:
            continue
        base = by_seed_of.get((baseline, d.axis))
        this = by_seed_of.get((d.mitigation, d.axis))
        if base is None or this is None:
            continue
        shared = [p for p in this[0] if p in base[0]]
        n_seeds = min(base[1].shape[1], this[1].shape[1])
        if not shared or n_seeds == 0:
            continue
        pick = [base[0].index(p) for p in shared], [this[0].index(p) for p in shared]
        both = np.stack([base[1][pick[0], :n_seeds], this[1][pick[1], :n_seeds]])
        n_classes = classes[d.axis]
        reps = resample_by_seed(both, n_classes, seed=config.seed)
        counts = (both[..., None] == np.arange(n_classes)).sum(axis=-2)
        interval = mean_difference_interval(counts[0], counts[1], reps[:, 0], reps[:, 1])
        diff, low, high = (float(v) for v in interval)
        if all(np.isfinite([diff, low, high])):
            d.dr_change_vs_baseline = DrChange(baseline=baseline, diff=diff, ci95=[low, high], paired=True)


def _as_list(interval: Any) -> list[float] | None:
    return list(interval) if interval else None
