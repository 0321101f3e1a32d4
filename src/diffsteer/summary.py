"""summary.json as typed records: one writer (:func:`write_summary`, atomic) and one reader
(:func:`load_summary` / :meth:`Summary.from_json`).

The file's keys are documented (docs/metrics.md, docs/report.md) and stay exactly as they were: every
record remembers which keys it was read with and in which order, keeps keys it does not know (a newer
version's, a plugin's) in ``extra``, and writes them back unchanged, so ``Summary.from_json(text).to_json()
== text`` for any summary an audit wrote. A key that an older summary lacks reads as ``None`` (or an empty
list) and stays absent on writing unless code gives it a value.

Built only on the standard library and :mod:`diffsteer.runs.atomic`, so the report, ``compare`` and
any tool can read a run without loading torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from diffsteer.runs.atomic import atomic_write_text

__all__ = [
    "SUMMARY_NAME",
    "AdapterCurve",
    "AggregateDetail",
    "AuditorAxis",
    "AuditorSection",
    "CorrectedShares",
    "DrChange",
    "FinetuneSection",
    "ModelInfo",
    "PromptDetail",
    "QualityRow",
    "QualitySection",
    "ResultRow",
    "RunConfig",
    "SafetyChange",
    "SafetyConcept",
    "SafetyRate",
    "SafetySection",
    "Summary",
    "load_summary",
    "write_summary",
]

SUMMARY_NAME = "summary.json"

R = TypeVar("R", bound="_Record")


def _key(*, record: type | None = None, many: bool = False, null: bool = True, default: Any = None) -> Any:
    """A field that is a key of the JSON object.

    ``record``: the value is that record type (a list of them with ``many``); ``null``: a record built in
    code writes this key even when its value is None (else the key is left out while None).
    """
    meta = {"record": record, "many": many, "null": null}
    if isinstance(default, list | dict):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class _Record:
    """A JSON object with known keys as attributes; unknown keys kept in ``extra`` in their place."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the order keys are written in; a record built in code follows the field order
        order = [f.name for f in self._keys() if f.metadata["null"] or getattr(self, f.name) is not None]
        object.__setattr__(self, "_order", order + [k for k in self.extra if k not in order])

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        order = self.__dict__.get("_order")
        if order is not None and name != "extra" and name not in order and name in self._names():
            order.append(name)  # a key given a value after reading is written, after the ones read

    @classmethod
    def _keys(cls) -> list[Any]:
        return [f for f in fields(cls) if f.name != "extra"]

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in cls._keys()}

    def has(self, key: str) -> bool:
        """Whether the record holds ``key`` (it was read, or set in code), even with a null value."""
        return key in self._order or key in self.extra

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in cls._keys()}
        values, extra = {}, {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                extra[key] = value
            elif f.metadata["record"] is not None and value is not None:
                kind = f.metadata["record"]
                values[key] = [_read(kind, v) for v in value] if f.metadata["many"] else _read(kind, value)
            else:
                values[key] = value
        record = cls(**values, extra=extra)
        object.__setattr__(record, "_order", list(data))
        return record

    def to_dict(self) -> dict[str, Any]:
        names = self._names()
        out = {}
        for key in self._order + [k for k in self.extra if k not in self._order]:
            if key in names:
                out[key] = _write(getattr(self, key))
            elif key in self.extra:  # (an unknown key the code removed is not written)
                out[key] = self.extra[key]
        return out


def _read(kind: Any, value: Any) -> Any:
    """A nested record; ``kind`` may pick the type from the value (``_Pick``)."""
    if isinstance(kind, _Pick):
        kind = kind.choose(value)
    return kind.from_dict(value)


def _write(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_write(v) for v in value]
    return value


@dataclass(frozen=True)
class _Pick:
    """A per-prompt or an aggregate (prompt null) record, chosen by the row's ``prompt``."""

    per_prompt: type
    aggregate: type

    def choose(self, value: dict[str, Any]) -> type:
        return self.aggregate if isinstance(value, dict) and value.get("prompt") is None else self.per_prompt


# --- results and details -----------------------------------------------------------------------------


@dataclass
class ResultRow(_Record):
    """One row of ``results``: a (mitigation, axis, prompt); ``prompt`` None is the mean over prompts."""

    mitigation: str = _key()
    axis: str = _key()
    prompt: str | None = _key()
    counts: dict[str, int] = _key(default={})
    n_dropped: int = _key(default=0)
    entigen_bias: float | None = _key()
    deviation_ratio: float | None = _key()  # bias-corrected estimate
    deviation_ratio_ci95: list[float] | None = _key()

    @property
    def is_aggregate(self) -> bool:
        return self.prompt is None

    @property
    def n_counted(self) -> int:
        return sum(self.counts.values())


@dataclass
class DrChange(_Record):
    """A mitigation's change of the mean deviation ratio against the baseline, paired by seed."""

    baseline: str = _key()
    diff: float = _key(default=0.0)
    ci95: list[float] | None = _key()
    paired: bool = _key(default=True)


@dataclass
class PromptDetail(_Record):
    """A ``details`` row of one prompt: what the documented ``results`` row leaves out."""

    mitigation: str = _key()
    axis: str = _key()
    prompt: str | None = _key()
    n_uncertain: int | None = _key()
    kl_to_uniform: float | None = _key()
    plugin_deviation_ratio: float | None = _key()
    plugin_deviation_ratio_ci95: list[float] | None = _key()
    detectable_deviation_ratio: float | None = _key()
    entigen_label: str | None = _key()
    seeds: list[int] | None = _key()  # None in summaries written before per-seed labels
    labels: list[str | None] | None = _key()  # the class of each seed's image (None: not counted)

    is_aggregate: ClassVar[bool] = False


@dataclass
class AggregateDetail(_Record):
    """The ``details`` row of a (mitigation, axis) over all prompts (``prompt`` None)."""

    mitigation: str = _key()
    axis: str = _key()
    prompt: str | None = _key()
    n_uncertain: int | None = _key()
    kl_to_uniform: float | None = _key()
    entigen_bias_ci95: list[float] | None = _key()
    entigen_label: str | None = _key()
    plugin_deviation_ratio: float | None = _key()
    plugin_deviation_ratio_ci95: list[float] | None = _key()
    resampled_by: str | None = _key()
    drop_reasons: dict[str, int] = _key(default={})
    dr_change_vs_baseline: DrChange | None = _key(record=DrChange, null=False)  # not on the baseline

    is_aggregate: ClassVar[bool] = True


# --- sections ----------------------------------------------------------------------------------------


@dataclass
class RunConfig(_Record):
    """``config``: the part of the audit's configuration that changes results (AuditConfig.identity())."""

    model: str | None = _key()
    benchmark: str | None = _key()
    category: str | None = _key()
    prompt_types: list[str] = _key(default=[])
    axes: list[str] = _key(default=[])
    culture_classes: list[str] | None = _key()
    images_per_prompt: int | None = _key()
    steps: int | None = _key()
    guidance: float | None = _key()
    seed: int | None = _key()
    mitigations: list[str] = _key(default=[])
    steering: dict[str, Any] | None = _key()
    hspace_branches: str | None = _key()
    classifier: str | None = _key()
    dtype: str | None = _key()


@dataclass
class ModelInfo(_Record):
    """``model``: what was loaded (its other keys, e.g. shapes, stay in ``extra``)."""

    ref: str | None = _key()
    pipeline: str | None = _key()
    prediction_type: str | None = _key()
    fingerprint: str | None = _key()
    weights: str | None = _key()


@dataclass
class QualityRow(_Record):
    mitigation: str = _key()
    n_images: int = _key(default=0)
    clip_score: float | None = _key()
    clip_score_ci95: list[float] | None = _key()
    clip_score_per_prompt: dict[str, float] = _key(default={})
    frechet_distance: float | None = _key()


@dataclass
class QualitySection(_Record):
    """``quality``: CLIP score and Fréchet distance to the baseline, per mitigation."""

    clip: str | None = _key()
    baseline: str | None = _key()
    clip_score: str | None = _key()  # what the score is (a sentence)
    frechet_distance: str | None = _key()  # what the distance is between (a sentence)
    mitigations: list[QualityRow] = _key(record=QualityRow, many=True, default=[])

    def by_mitigation(self) -> dict[str, QualityRow]:
        return {row.mitigation: row for row in self.mitigations}


@dataclass
class AuditorAxis(_Record):
    """The classifier's confusion on one axis of the reference set (``confusion`` None with a ``note``)."""

    axis: str = _key()
    classes: list[str] = _key(default=[])
    confusion: list[list[int]] | None = _key()
    columns: list[str] | None = _key(null=False)
    n: int | None = _key(null=False)
    accuracy: float | None = _key(null=False)
    accuracy_when_counted: float | None = _key(null=False)
    note: str | None = _key(null=False)


@dataclass
class CorrectedShares(_Record):
    """Raw and corrected shares of a (mitigation, axis, prompt); ``prompt`` None: the mean DR only."""

    mitigation: str = _key()
    axis: str = _key()
    prompt: str | None = _key()
    raw_shares: dict[str, float] | None = _key()
    raw_deviation_ratio: float | None = _key()
    shares: dict[str, float] | None = _key(null=False)
    shares_ci95: dict[str, list[float]] | None = _key(null=False)
    deviation_ratio: float | None = _key()
    deviation_ratio_ci95: list[float] | None = _key()


@dataclass
class AuditorSection(_Record):
    """``auditor``: the classifier checked on labelled reference images, and corrected shares."""

    reference: dict[str, Any] = _key(default={})  # its source and what the set holds
    classifier: str | None = _key()
    method: str | None = _key()
    axes: list[AuditorAxis] = _key(record=AuditorAxis, many=True, default=[])
    corrected: list[CorrectedShares] = _key(record=CorrectedShares, many=True, default=[])


@dataclass
class SafetyConcept(_Record):
    name: str = _key()
    axis: str = _key()
    unsafe_class: str = _key()


@dataclass
class SafetyRate(_Record):
    """The unsafe rate of one concept for a (mitigation, prompt); ``prompt`` None: pooled over prompts."""

    mitigation: str = _key()
    concept: str = _key()
    axis: str = _key()
    prompt: str | None = _key()
    n: int = _key(default=0)
    n_unsafe: int = _key(default=0)
    unsafe_rate: float | None = _key()
    unsafe_rate_ci95: list[float] | None = _key()
    # pooled rows: how much the seeds that prompts share widen the interval; None: images taken as
    # independent (one prompt, or a summary without per-seed labels)
    design_effect: float | None = _key()


@dataclass
class SafetyChange(_Record):
    """A mitigation's reduction of a concept's pooled unsafe rate against the baseline, on the prompts
    both made: ``1 - rate / baseline rate`` (negative: more unsafe images)."""

    mitigation: str = _key()
    concept: str = _key()
    axis: str = _key()
    baseline: str = _key()
    prompts: int = _key(default=0)
    reduction: float | None = _key()
    reduction_ci95: list[float] | None = _key()


@dataclass
class SafetySection(_Record):
    """``safety``: the unsafe concepts an audit judged, their rates and each mitigation's change."""

    concepts: list[SafetyConcept] = _key(record=SafetyConcept, many=True, default=[])
    rates: list[SafetyRate] = _key(record=SafetyRate, many=True, default=[])
    changes: list[SafetyChange] = _key(record=SafetyChange, many=True, default=[])


@dataclass
class GuardBlock(_Record):
    """One (mitigation, prompt) the prompt guard blocked: no image was made for it."""

    mitigation: str = _key()
    prompt_id: str = _key()
    prompt: str = _key()  # what the model would have read
    decoded: str = _key()  # the guard's reading of the text encoder's output
    similarity: float = _key()
    reason: str = _key()
    images_not_made: int = _key(default=0)


@dataclass
class GuardSection(_Record):
    """``guard``: present when the audit ran with ``--guard``."""

    file: str = _key()
    phrases: str | None = _key(null=False)  # the user's phrase file its judge also read
    similarity_threshold: float = _key()
    n_checked_prompts: int = _key(default=0)
    n_blocked_prompts: int = _key(default=0)
    n_images_not_made: int = _key(default=0)
    blocked: list[GuardBlock] = _key(record=GuardBlock, many=True, default=[])


@dataclass
class AdapterCurve(_Record):
    """A ``lora:FOLDER`` mitigation's training: its reward and KL to the frozen model per update.

    ``updates`` is empty when the adapter recorded none (``note`` says so). Both axes are noisy from
    update to update (each update samples new seeds), hence the running means.
    """

    mitigation: str = _key()
    method: str | None = _key()
    reward: str | None = _key()  # the reward's name, and its axes or concept
    kl_coef: float | None = _key()
    learning_rate: float | None = _key()
    # which projections the adapter changes ("all", "cross-attention"; " + text encoders" when they too)
    lora_scope: str | None = _key()
    updates: list[dict[str, float]] = _key(default=[])  # [{iteration, reward, kl}]
    window: int | None = _key()  # updates per running mean
    running_mean: list[dict[str, float]] = _key(default=[])  # [{iteration, reward, kl}] over ``window``
    end_kl: float | None = _key()  # the last running mean: the means over the last ``window`` updates
    end_reward: float | None = _key()
    source: str | None = _key()  # where the curve was read
    note: str | None = _key(null=False)


@dataclass
class FinetuneSection(_Record):
    """``finetune``: present when an audit compares LoRA fine-tunes; one curve per adapter."""

    reward: str | None = _key()  # what the training reward is (a sentence)
    kl: str | None = _key()  # what the KL is (a sentence)
    adapters: list[AdapterCurve] = _key(record=AdapterCurve, many=True, default=[])


# --- the whole file ----------------------------------------------------------------------------------


@dataclass
class Summary(_Record):
    """summary.json. ``results`` holds the documented rows; the sections a run predates are None."""

    config: RunConfig = _key(record=RunConfig)
    model: ModelInfo | None = _key(record=ModelInfo, null=False)
    classifier: str | None = _key(null=False)
    images: int | None = _key(null=False)
    statistics: dict[str, Any] | None = _key(null=False)  # how the deviation ratios are computed
    results: list[ResultRow] = _key(record=ResultRow, many=True, default=[])
    details: list[PromptDetail | AggregateDetail] = _key(
        record=_Pick(PromptDetail, AggregateDetail), many=True, default=[], null=False
    )
    safety: SafetySection | None = _key(record=SafetySection, null=False)
    guard: GuardSection | None = _key(record=GuardSection, null=False)
    finetune: FinetuneSection | None = _key(record=FinetuneSection, null=False)  # LoRA mitigations only
    quality: QualitySection | None = _key(record=QualitySection, null=False)
    auditor: AuditorSection | None = _key(record=AuditorSection, null=False)  # set None: no reference set
    provenance: dict[str, Any] | None = _key(null=False)

    def __post_init__(self) -> None:
        if self.config is None:  # a hand-made summary of rows only (its file stays without one)
            object.__setattr__(self, "config", RunConfig())
        super().__post_init__()

    # -- reading ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ValueError("no 'results' list; is it a diffsteer summary?")
        return super().from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> Summary:
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        """The file's text: indented JSON, no NaN (the format every summary.json has been written in)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    # -- what readers ask ---------------------------------------------------------------------------

    @property
    def mitigations(self) -> list[str]:
        """The run's mitigations in order (from its config; from its rows for a summary without one)."""
        return list(self.config.mitigations) or list(dict.fromkeys(r.mitigation for r in self.results))

    @property
    def axes(self) -> list[str]:
        return list(self.config.axes) or list(dict.fromkeys(r.axis for r in self.results))

    def rows(
        self, *, mitigation: str | None = None, axis: str | None = None, aggregate: bool | None = None
    ) -> list[ResultRow]:
        """``results`` rows, filtered; ``aggregate`` True: the means over prompts, False: the prompts."""
        return [
            r
            for r in self.results
            if (mitigation is None or r.mitigation == mitigation)
            and (axis is None or r.axis == axis)
            and (aggregate is None or r.is_aggregate == aggregate)
        ]

    def aggregate(self, mitigation: str, axis: str) -> ResultRow | None:
        return next(iter(self.rows(mitigation=mitigation, axis=axis, aggregate=True)), None)

    def prompt_details(self) -> list[PromptDetail]:
        return [d for d in self.details if isinstance(d, PromptDetail)]

    def aggregate_details(self) -> dict[tuple[str, str], AggregateDetail]:
        """The aggregate details row of each (mitigation, axis)."""
        return {(d.mitigation, d.axis): d for d in self.details if isinstance(d, AggregateDetail)}


def summary_path(run: Path | str) -> Path:
    """summary.json of a run folder (or the file itself)."""
    path = Path(run)
    return path / SUMMARY_NAME if path.is_dir() else path


def load_summary(run: Path | str) -> Summary:
    """Read a run's summary.json (the folder or the file); the error names the file and what is wrong."""
    path = summary_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"no {SUMMARY_NAME} at {path}: is {run} a finished diffsteer run?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    try:
        return Summary.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"{path} does not have the layout of a diffsteer summary ({exc})") from None


def write_summary(run_dir: Path | str, summary: Summary) -> Path:
    """Write ``run_dir/summary.json`` atomically (a crash never leaves half a file)."""
    return atomic_write_text(Path(run_dir) / SUMMARY_NAME, summary.to_json())
