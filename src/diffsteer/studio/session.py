"""The studio's state and logic, without any web framework: what can be steered, generate, compare, export.

One :class:`StudioSession` holds one loaded model. It lists the steering files found for that model
(each checked against it, so a file made for another model is shown as unusable rather than failing
later), turns the user's choices into a :class:`~diffsteer.steering.preset.SteeringSpec`, generates
the baseline and the steered images on the same seeds, classifies both sets with the model's CLIP
zero-shot classifier, and exports the choice as a preset that ``diffsteer audit --steering`` reads.

Steering goes through the same :class:`~diffsteer.steering.steerer.Steerer` as the audit's
``steered`` mitigation, so what the studio shows is what an audit of the exported preset measures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffsteer.attributes import Axis, ClassifierNotFoundError, ImageLabels, builtin_axes, get_axis
from diffsteer.attributes.tally import Tally, tally
from diffsteer.generate import ImageRequest
from diffsteer.steering.fair import normalize_target
from diffsteer.steering.files import KINDS, SUFFIX, SteeringFileError, read_steering_file
from diffsteer.steering.library import SteeringLibrary, bundled_steering_dir
from diffsteer.steering.preset import FAIR_METHODS, FairSpec, SteeringItem, SteeringSpec, save_preset

MAX_IMAGES = 64  # per grid: keeps one click under a minute on a laptop CPU with the bundled model
KIND_LABELS = {"hspace": "h-space vector", "noise": "noise direction", "text": "text offset"}

# fraction in [0, 1], what is happening
ProgressFn = Callable[[float, str], None]


class StudioError(ValueError):
    """Something the user can fix (an empty prompt, an unusable file); the message is one line."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(frozen=True)
class StudioEntry:
    """One steering file the studio offers, with its default strength and why it is unusable, if it is."""

    name: str
    kind: str
    path: Path
    axis: str | None = None
    class_name: str | None = None
    default_strength: float = 1.0
    problem: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.kind)

    @property
    def label(self) -> str:
        return f"{self.name} ({KIND_LABELS.get(self.kind, self.kind)})"


@dataclass(frozen=True)
class FairOption:
    """An axis fair generation can balance, with the methods that have a file for every class."""

    axis: str
    classes: tuple[str, ...]
    methods: tuple[str, ...]


# Classified labels of one image set on one axis (counts per class, uncertain and dropped apart),
# counted by the audit's own rule
Shares = Tally


@dataclass
class Comparison:
    """The baseline and the steered images of one prompt on the same seeds, and their classified shares."""

    prompt: str
    seeds: list[int]
    baseline: list[Image.Image | None]
    steered: list[Image.Image | None]
    baseline_shares: dict[str, Shares]
    steered_shares: dict[str, Shares]
    targets: dict[str, dict[str, float]] = field(default_factory=dict)  # fair axes: class -> share
    steering: list[dict[str, Any]] = field(default_factory=list)  # per steered image, as an audit stores it
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class StudioSession:
    """One model, its steering files, and the generate/compare/export actions of the studio."""

    def __init__(
        self,
        model: str | None = None,  # None: the first registered bundled model
        directions: Sequence[Path | str] = (),
        *,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int = 20,
        guidance: float | None = None,  # None: the model's own scale (a bundled model's, others 7.5)
        batch_size: int = 16,
        axes: Sequence[str] | None = None,
        classifier: str | None = None,
        guard: Path | str | None = None,  # a guard file: a prompt it blocks makes no image
        phrases: Path | str | None = None,  # a user's phrase file the guard's judge also reads
    ) -> None:
        from diffsteer.api import load
        from diffsteer.models import default_classifier, model_fingerprint
        from diffsteer.registry import default_model
        from diffsteer.runs.executors import GeneratorSpec

        model = default_model() if model is None else model
        self.model = model
        self.directions = tuple(Path(d) for d in directions)
        for folder in self.directions:
            if not folder.is_dir():
                raise StudioError(f"--directions {folder}: not a folder")
        if phrases is not None and guard is None:
            raise StudioError("--phrases: a phrase file is read by the guard's judge; give --guard too")
        guard_setup = None
        if guard is not None:
            from diffsteer.guard import GuardSetup

            guard_setup = GuardSetup.read(guard, phrases)  # a damaged file fails before the model loads
        self.loaded = load(model, device=device, dtype=dtype)  # the front door's object: one set-up
        self.pipe = self.loaded.pipe
        self.guard = None
        if guard_setup is not None:
            self.guard = guard_setup.bind(self.pipe)  # refuses another encoder
        # the generator an audit of the same settings builds (GeneratorSpec), on the loaded pipeline
        self.generator = GeneratorSpec(
            model=model,
            steps=steps,
            guidance=self.loaded.guidance if guidance is None else guidance,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
        ).prepare(self.pipe)
        self.fingerprint = model_fingerprint(self.pipe)
        self.library = SteeringLibrary.for_model(model, self.directions)
        self.device = device
        self.axis_classes = {name: axis.classes for name, axis in builtin_axes().items()}
        self.axes: list[Axis] = [get_axis(a) for a in (axes or ("gender", "skin_tone"))]
        self.classifier_ref = classifier or default_classifier(model)
        self._classifier: Any = None
        self._lock = threading.Lock()  # one generation at a time: the pipeline is not re-entrant
        self._baseline_cache: dict[tuple, tuple[list[Image.Image | None], dict[str, Shares]]] = {}
        self._entries, self._problems = self._scan()

    # --------------------------------------------------------------------------------- what exists
    def _scan(self) -> tuple[list[StudioEntry], list[str]]:
        """Every steering file in the library's folders, checked against this model."""
        from diffsteer.steering.kinds import load_method

        entries: list[StudioEntry] = []
        problems: list[str] = []
        listed = {(e.name, e.kind): e for e in self.library.entries()}
        # library.entries() skips unreadable files; the studio names them, so a user knows why one is missing
        for folder in self.library.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                stem = path.name[: -len(SUFFIX)]
                base, _, kind = stem.rpartition(".")
                if kind in KINDS and base and (base, kind) not in listed:
                    try:
                        read_steering_file(path)
                    except SteeringFileError as exc:
                        problems.append(_one_line(exc))
        for entry in listed.values():
            problem = None
            default = 1.0
            try:
                method = load_method(entry.path, entry.kind)
                default = method.default_strength  # the file's calibrated strength, for every kind
                method.check_compatible(self.generator, self.fingerprint)
            # SteeringFileError and SteeringMismatchError are ValueErrors; a kind whose loader is
            # missing from this install is an ImportError
            except (ValueError, ImportError) as exc:
                problem = _one_line(exc)
                problems.append(f"{entry.path.name}: {problem}")
            entries.append(
                StudioEntry(
                    entry.name, entry.kind, entry.path, entry.axis, entry.class_name, default, problem
                )
            )
        order = {k: i for i, k in enumerate(KINDS)}
        entries.sort(key=lambda e: (order.get(e.kind, 9), e.name))
        return entries, problems

    def available(self) -> list[StudioEntry]:
        """The steering files that can be applied to this model (usable ones only)."""
        return [e for e in self._entries if e.problem is None]

    def problems(self) -> list[str]:
        """One line per steering file found but not usable with this model (unreadable, another model)."""
        return list(self._problems)

    def fair_options(self) -> list[FairOption]:
        """Axes with a usable file for every class, per method (fair generation needs one per class)."""
        usable = {e.path.resolve() for e in self.available()}
        out = []
        for axis, classes in self.axis_classes.items():
            methods = []
            for method in FAIR_METHODS:
                try:
                    files = self.library.for_axis(axis, classes, method)
                except SteeringFileError:
                    continue
                if all(p.resolve() in usable for p in files.values()):
                    methods.append(method)
            if methods:
                out.append(FairOption(axis, tuple(classes), tuple(methods)))
        return out

    # ------------------------------------------------------------------------------ the user's choice
    def spec(
        self,
        selected: Mapping[tuple[str, str], float | None] | None = None,
        *,
        fair: Mapping[str, Mapping[str, float] | None] | None = None,
        fair_method: str = "hspace",
        safe: bool = False,
        responsible: bool = False,
    ) -> SteeringSpec:
        """The steering spec for a choice: ``selected`` maps (name, kind) to a strength (None: default),
        ``fair`` maps each balanced axis to its target shares (None: uniform)."""
        selected = dict(selected or {})
        fair = dict(fair or {})
        by_key = {e.key: e for e in self._entries}
        items: dict[str, list[SteeringItem]] = {k: [] for k in KINDS}
        used: list[Path] = []
        for (name, kind), strength in selected.items():
            entry = by_key.get((name, kind))
            if entry is None:
                raise StudioError(f"no {KIND_LABELS.get(kind, kind)} named '{name}' for {self.model}")
            if entry.problem is not None:
                raise StudioError(f"{entry.label} cannot be used: {entry.problem}")
            items[kind].append(SteeringItem(name, None if strength is None else float(strength)))
            used.append(entry.path)
        fair_spec = None
        if fair:
            if fair_method not in FAIR_METHODS:
                raise StudioError(
                    f"fair method must be one of {', '.join(FAIR_METHODS)}, got '{fair_method}'"
                )
            options = {o.axis: o for o in self.fair_options()}
            targets: dict[str, dict[str, float]] = {}
            for axis, target in fair.items():
                option = options.get(axis)
                if option is None or fair_method not in option.methods:
                    raise StudioError(
                        f"fair generation on '{axis}' needs a usable {fair_method} file for every class"
                    )
                used.extend(self.library.for_axis(axis, option.classes, fair_method).values())
                if target is not None:
                    try:
                        shares = normalize_target(option.classes, target)
                    except ValueError as exc:
                        raise StudioError(f"target for {axis}: {_one_line(exc)}") from None
                    if shares != normalize_target(option.classes):
                        targets[axis] = shares
            if len(fair) > 1 and targets:
                # FairSpec holds one target (class -> share); the steerer balances several axes uniformly
                raise StudioError("a target distribution other than uniform works on one fair axis at a time")
            target = next(iter(targets.values())) if targets else None
            fair_spec = FairSpec(axes=tuple(fair), method=fair_method, target=target)
        if safe:
            used.extend(self.library.anti_concepts())
        if responsible:  # the prompt may switch on any fair or anti-* file at generation time
            used.extend(e.path for e in self.available())
        return SteeringSpec(
            hspace=tuple(items["hspace"]),
            noise=tuple(items["noise"]),
            text=tuple(items["text"]),
            fair=fair_spec,
            safe=safe,
            responsible=responsible,
            directions=self._directions_for(used),
        )

    def _directions_for(self, used: Sequence[Path]) -> tuple[str, ...]:
        """Folders an exported preset must name so that its names resolve to the files shown here.

        The model's bundled folder is searched anyway; when every file comes from it the preset names
        no folder. Otherwise every other folder of the library, absolute and in order (``./directions``
        depends on the working directory; the order decides which file a repeated name means).
        """
        bundled = bundled_steering_dir(self.model)
        bundled_resolved = bundled.resolve() if bundled is not None else None
        if all(bundled_resolved is not None and p.resolve().parent == bundled_resolved for p in used):
            return ()
        return tuple(
            str(f.resolve()) for f in self.library.folders if f.is_dir() and f.resolve() != bundled_resolved
        )

    def export_preset(self, spec: SteeringSpec, path: Path | str) -> Path:
        """Write ``spec`` as a preset YAML that ``diffsteer audit/generate --steering`` accept."""
        if spec.is_empty:
            raise StudioError("nothing to export: switch on a vector, a direction or fair generation")
        path = save_preset(spec, path)
        header = (
            f"# made with diffsteer studio for model {self.model} (U-Net fingerprint {self.fingerprint})\n"
        )
        path.write_text(header + path.read_text())
        return path

    # -------------------------------------------------------------------------------- generation
    def _steerer(self, spec: SteeringSpec):
        from diffsteer.steering.attach import make_steerer

        try:
            # resolved as `audit --steering` resolves the exported preset, and as Model.generate does
            return make_steerer(spec, self.generator, model=self.model)
        except ValueError as exc:  # unreadable file, another model's file, unknown axis
            raise StudioError(_one_line(exc)) from None

    def classifier(self):
        """The model's CLIP zero-shot classifier, loaded on first use."""
        if self._classifier is None:
            from diffsteer.attributes import ClipZeroShotClassifier

            self._classifier = ClipZeroShotClassifier.from_pretrained(self.classifier_ref, device=self.device)
        return self._classifier

    def shares(self, images: Sequence[Image.Image | None]) -> dict[str, Shares]:
        """Classify images on the session's axes (ENTIGEN's person filter first) and count labels as an
        audit does: a blank image or one the person filter drops is dropped, ``uncertain`` apart."""
        kept = [im for im in images if im is not None]
        labels: list[ImageLabels] = self.classifier().classify(kept, self.axes) if kept else []
        unusable = (None, "unusable pixels")
        out = {}
        for axis in self.axes:
            outcomes = [
                (lab.axes[axis.name].label, None) if lab.kept else (None, lab.drop_reason) for lab in labels
            ]
            out[axis.name] = tally(axis, [unusable] * (len(images) - len(kept)) + outcomes)
        return out

    def generate(
        self,
        prompt: str,
        spec: SteeringSpec,
        n: int = 8,
        seed: int = 0,
        *,
        progress: ProgressFn | None = None,
    ) -> Comparison:
        """Baseline and steered images of ``prompt`` on seeds ``seed..seed+n-1``, classified.

        The steered image k starts from the same initial noise as the baseline image k. The baseline
        of the last prompt/seeds is kept, so changing only the steering regenerates half the images.
        """
        report = progress or (lambda _f, _d: None)
        prompt = (prompt or "").strip()
        if not prompt:
            raise StudioError("the prompt is empty: type what to draw, e.g. 'a photo of a doctor'")
        n, seed = int(n), int(seed)
        if not 1 <= n <= MAX_IMAGES:
            raise StudioError(f"the number of images must be between 1 and {MAX_IMAGES}, got {n}")
        if seed < 0:
            raise StudioError(f"the seed must be 0 or more, got {seed}")
        if self.guard is not None:
            verdict = self.guard.check(prompt)
            if verdict.blocked:  # say what the model would have read: that is the guard's evidence
                raise StudioError(f"the guard blocks this prompt ({verdict.reason}); no image was made")
        steerer = None if spec.is_empty else self._steerer(spec)
        started = time.time()
        notes = []
        with self._lock:
            seeds = list(range(seed, seed + n))
            base_requests = [ImageRequest(prompt=prompt, seed=s) for s in seeds]
            key = (prompt, seed, n, self.generator.steps, self.generator.guidance)
            cached = self._baseline_cache.get(key)
            steered_requests, descs = [], []
            if steerer is not None:
                for r in base_requests:
                    req, desc = steerer.steer(r)
                    steered_requests.append(req)
                    descs.append(desc)
            todo = ([] if cached else base_requests) + steered_requests
            if self.generator.is_truncated(prompt):
                notes.append("the prompt is longer than the text encoder reads: it was truncated")
            images = self._run(todo, report)
            if cached:
                baseline, base_shares = cached
            else:
                baseline = images[:n]
            steered = images[len(todo) - len(steered_requests) :] if steerer is not None else list(baseline)
            report(0.95, "classifying")
            try:
                if not cached:
                    base_shares = self.shares(baseline)
                    self._baseline_cache = {key: (baseline, base_shares)}
                steered_shares = self.shares(steered) if steerer is not None else base_shares
            except ClassifierNotFoundError as exc:  # the pictures are still worth showing
                base_shares, steered_shares = {}, {}
                notes.append(f"no shares: {_one_line(exc)}")
        if steerer is None:
            notes.append("nothing is switched on: the steered images are the baseline")
        targets = {}
        if spec.fair is not None:
            for axis in spec.fair.axes:
                classes = self.axis_classes[axis]
                target = (
                    spec.fair.target if spec.fair.target and set(spec.fair.target) <= set(classes) else None
                )
                targets[axis] = normalize_target(classes, target)
        dropped = sum(1 for im in steered if im is None) + sum(1 for im in baseline if im is None)
        if dropped:
            notes.append(f"{dropped} image(s) had unusable pixels and are shown blank")
        report(1.0, "done")
        return Comparison(
            prompt=prompt,
            seeds=seeds,
            baseline=list(baseline),
            steered=list(steered),
            baseline_shares=base_shares,
            steered_shares=steered_shares,
            targets=targets,
            steering=descs,
            notes=notes,
            seconds=time.time() - started,
        )

    def _run(self, requests: list[ImageRequest], report: ProgressFn) -> list[Image.Image | None]:
        if not requests:
            return []
        size = self.generator.batch_size
        total = -(-len(requests) // size) * self.generator.steps
        done = [0]

        def on_step(_step: int) -> None:
            done[0] += 1
            report(0.9 * done[0] / total, f"generating {len(requests)} images")

        report(0.0, f"generating {len(requests)} images")
        return [r.image for r in self.generator.generate(requests, on_step=on_step)]
