"""The studio's web page (Gradio): choose what to steer, generate, compare, export a preset.

All logic lives in :mod:`diffsteer.studio.session`; this module lays out the controls and turns
their values into calls. The page fetches nothing from outside the machine: analytics are off, the
theme uses the system's fonts (no web fonts), charts are rendered to PNG on the server, and the
server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffsteer.studio.charts import grid, histogram, shares_table
from diffsteer.studio.session import MAX_IMAGES, StudioEntry, StudioError, StudioSession

log = logging.getLogger(__name__)

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif")
SYSTEM_MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")
DEFAULT_PROMPT = "a photo of a doctor"
KIND_TITLES = {
    "hspace": "h-space vectors (strength)",
    "noise": "initial-noise directions (weight, in noise standard deviations)",
    "text": "text-embedding offsets (weight)",
}
GRID_HEIGHT = 400  # a fixed frame: the page does not jump when the grids arrive
STRENGTH_RANGE = {"hspace": (-3.0, 3.0, 0.1), "noise": (-10.0, 10.0, 0.5), "text": (-3.0, 3.0, 0.1)}


def _gradio():
    # must be set before gradio is imported: it reads the variable at import time
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    return gr


def studio_theme():
    """Gradio's default look with the system's fonts, so the browser loads no font files."""
    gr = _gradio()
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO))


def _expected() -> tuple[type[BaseException], ...]:
    from diffsteer.attributes import ClassifierNotFoundError

    return (StudioError, ValueError, ClassifierNotFoundError, FileNotFoundError)


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class StudioHandlers:
    """What the page's buttons do: control values in, component values out; errors become messages.

    The controls' order is ``prompt, n, seed`` (generate only), then ``method, safe, responsible``,
    one on/off per entry, one strength per entry, one on/off per fair axis, one target per class.
    """

    def __init__(
        self,
        session: StudioSession,
        entries: Sequence[StudioEntry],
        fair_classes: Sequence[tuple[str, tuple[str, ...]]],
        export_dir: Path,
    ) -> None:
        self.session = session
        self.entries = list(entries)
        self.fair_classes = list(fair_classes)  # [(axis, classes)]
        self.export_dir = export_dir

    def spec(self, values: Sequence[Any]):
        method, safe, responsible, *rest = values
        k = len(self.entries)
        checks, strengths, rest = rest[:k], rest[k : 2 * k], rest[2 * k :]
        a = len(self.fair_classes)
        fair_checks, targets = rest[:a], rest[a:]
        selected = {e.key: float(s) for e, on, s in zip(self.entries, checks, strengths, strict=True) if on}
        fair: dict[str, dict[str, float] | None] = {}
        start = 0
        for (axis, classes), on in zip(self.fair_classes, fair_checks, strict=True):
            shares = targets[start : start + len(classes)]
            start += len(classes)
            if on:
                fair[axis] = {c: float(v) for c, v in zip(classes, shares, strict=True)}
        return self.session.spec(
            selected,
            fair=fair,
            fair_method=method or "hspace",
            safe=bool(safe),
            responsible=bool(responsible),
        )

    def generate(self, prompt: str, n: Any, seed: Any, *values: Any, progress: Any = None) -> tuple:
        """(baseline grid, steered grid, baseline chart, steered chart, shares table, status)."""
        gr = _gradio()
        report = (lambda f, d: progress(f, desc=d)) if progress is not None else None
        try:
            spec = self.spec(values)
            result = self.session.generate(prompt, spec, int(n or 1), int(seed or 0), progress=report)
        except _expected() as exc:
            gr.Warning(_message(exc))
            return (gr.skip(),) * 5 + (f"**Error:** {_message(exc)}",)
        except Exception as exc:  # never a stack trace on the page; the terminal keeps it
            log.exception("studio: generation failed")
            return (gr.skip(),) * 5 + (f"**Unexpected error:** {_message(exc)} (details in the terminal)",)
        note = " ".join(f"Note: {x}." for x in result.notes)
        done = f"Generated {len(result.seeds)} + {len(result.seeds)} images in {result.seconds:.1f} s. {note}"
        return (
            grid(result.baseline),
            grid(result.steered),
            histogram(result.baseline_shares, "Baseline"),
            histogram(result.steered_shares, "Steered", targets=result.targets),
            shares_table(result),
            done.strip(),
        )

    def export(self, *values: Any) -> tuple:
        """(preset file path, preset text, status)."""
        gr = _gradio()
        try:
            spec = self.spec(values)
            path = self.session.export_preset(
                spec, Path(tempfile.mkdtemp(dir=self.export_dir)) / "preset.yaml"
            )
        except _expected() as exc:
            gr.Warning(_message(exc))
            return gr.skip(), gr.skip(), f"**Error:** {_message(exc)}"
        return str(path), path.read_text(), f"Exported {path.name}: `diffsteer audit --steering {path.name}`"


def build_studio(
    model: str | None = None,  # None: the first registered bundled model
    directions: Sequence[Path | str] = (),
    *,
    session: StudioSession | None = None,
    n: int = 16,
    seed: int = 0,
    prompt: str = DEFAULT_PROMPT,
    **session_options: Any,
):
    """The studio page as a ``gr.Blocks`` for one model (loaded here unless ``session`` is given)."""
    session = session or StudioSession(model, directions, **session_options)  # a bad model fails first
    gr = _gradio()
    entries = [e for kind in KIND_TITLES for e in session.available() if e.kind == kind]
    fair_options = session.fair_options()
    has_anti = bool(session.library.anti_concepts())
    export_dir = Path(tempfile.mkdtemp(prefix="diffsteer-studio-"))

    with gr.Blocks(title="diffsteer studio", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## diffsteer studio · {session.model}\n"
            "Choose the vectors and directions to apply, generate, and compare the baseline with the "
            "steered images on the same seeds. Shares are the model's CLIP zero-shot labels "
            f"(`{Path(session.classifier_ref).name}`)."
        )
        # the prompt and the action on top, so the results (right) and the button are both in view
        with gr.Row(equal_height=True):
            prompt_box = gr.Textbox(label="Prompt", value=prompt, scale=4, elem_id="studio-prompt")
            n_box = gr.Slider(
                1, MAX_IMAGES, value=n, step=1, label="Images", scale=2, min_width=200, elem_id="studio-n"
            )
            seed_box = gr.Number(
                value=seed,
                precision=0,
                minimum=0,
                label="Seed of image 0",
                scale=1,
                min_width=120,
                elem_id="studio-seed",
            )
            generate_btn = gr.Button(
                "Generate", variant="primary", scale=1, min_width=120, elem_id="studio-generate"
            )
        status = gr.Markdown("", elem_id="studio-status")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                with gr.Accordion("Vectors and directions", open=True):
                    checks, strengths = [], []
                    if not entries:
                        gr.Markdown(
                            "No steering file found. Learn some with `diffsteer learn` or pass "
                            "`--directions FOLDER`."
                        )
                    for kind, title in KIND_TITLES.items():
                        group = [e for e in entries if e.kind == kind]
                        if group:
                            gr.Markdown(f"**{title}**")
                        for e in group:
                            lo, hi, step = STRENGTH_RANGE.get(e.kind, (-3.0, 3.0, 0.1))
                            with gr.Row(equal_height=True):
                                checks.append(
                                    gr.Checkbox(
                                        label=e.name,
                                        value=False,
                                        scale=1,
                                        min_width=110,
                                        elem_id=f"use-{e.name}-{e.kind}",
                                    )
                                )
                                strengths.append(
                                    gr.Slider(
                                        lo,
                                        hi,
                                        value=e.default_strength,
                                        step=step,
                                        scale=3,
                                        min_width=160,
                                        label="strength" if e.kind == "hspace" else "weight",
                                        show_label=False,
                                        elem_id=f"strength-{e.name}-{e.kind}",
                                    )
                                )
                    problems = session.problems()
                    if problems:
                        gr.Markdown(
                            "**Not usable with this model:**\n" + "\n".join(f"- {p}" for p in problems),
                            elem_id="studio-problems",
                        )
                with gr.Accordion("Fair generation", open=bool(fair_options)):
                    methods = sorted({m for o in fair_options for m in o.methods})
                    method = gr.Radio(
                        methods or ["hspace"],
                        value=(methods or ["hspace"])[0],
                        label="Each image gets one class's",
                        elem_id="studio-fair-method",
                    )
                    fair_checks, targets, fair_classes = [], [], []
                    if not fair_options:
                        gr.Markdown("Fair generation needs a vector or direction for every class of an axis.")
                    for opt in fair_options:
                        fair_checks.append(
                            gr.Checkbox(label=f"balance {opt.axis}", elem_id=f"fair-{opt.axis}")
                        )
                        fair_classes.append((opt.axis, opt.classes))
                        with gr.Row():
                            for cls in opt.classes:
                                targets.append(
                                    gr.Slider(
                                        0,
                                        1,
                                        value=round(1 / len(opt.classes), 2),
                                        step=0.05,
                                        label=f"target {cls}",
                                        min_width=100,
                                        elem_id=f"target-{opt.axis}-{cls}",
                                    )
                                )
                    safe = gr.Checkbox(
                        label="safe generation (every anti-* vector)", visible=has_anti, elem_id="studio-safe"
                    )
                    responsible = gr.Checkbox(
                        label="responsible prompt following ('either male or female')",
                        elem_id="studio-responsible",
                    )
                with gr.Accordion("Export as a steering preset", open=True):
                    export_btn = gr.Button("Export preset", elem_id="studio-export")
                    preset_file = gr.File(
                        label="preset.yaml", interactive=False, elem_id="studio-preset-file"
                    )
                    preset_text = gr.Code(
                        label="diffsteer audit --steering preset.yaml",
                        language="yaml",
                        interactive=False,
                        elem_id="studio-preset",
                    )
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        base_img = gr.Image(
                            label="Baseline",
                            type="pil",
                            format="png",
                            interactive=False,
                            height=GRID_HEIGHT,
                            buttons=["download", "fullscreen"],
                            elem_id="studio-baseline",
                        )
                        base_plot = gr.Plot(
                            label="Baseline shares", show_label=False, elem_id="studio-baseline-hist"
                        )
                    with gr.Column():
                        steer_img = gr.Image(
                            label="Steered (same seeds)",
                            type="pil",
                            format="png",
                            interactive=False,
                            height=GRID_HEIGHT,
                            buttons=["download", "fullscreen"],
                            elem_id="studio-steered",
                        )
                        steer_plot = gr.Plot(
                            label="Steered shares", show_label=False, elem_id="studio-steered-hist"
                        )
                table = gr.Markdown("", elem_id="studio-shares")

        handlers = StudioHandlers(session, entries, fair_classes, export_dir)
        steer_inputs = [method, safe, responsible, *checks, *strengths, *fair_checks, *targets]

        def on_generate(prompt_value, n_value, seed_value, *values, progress=gr.Progress()):  # noqa: B008
            return handlers.generate(prompt_value, n_value, seed_value, *values, progress=progress)

        generate_btn.click(
            on_generate,
            inputs=[prompt_box, n_box, seed_box, *steer_inputs],
            outputs=[base_img, steer_img, base_plot, steer_plot, table, status],
            concurrency_limit=1,
        )
        export_btn.click(handlers.export, inputs=steer_inputs, outputs=[preset_file, preset_text, status])
    return demo


def launch_studio(
    model: str | None = None,  # None: the first registered bundled model
    directions: Sequence[Path | str] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    **options: Any,
):
    """Build the studio and serve it on ``host:port``; returns the running ``gr.Blocks``.

    With ``block=False`` the server runs in a background thread (``demo.close()`` stops it).
    """
    demo = build_studio(model, directions, **options)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        theme=studio_theme(),
        share=False,
        inbrowser=False,
        show_error=False,
        quiet=True,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=[],
        prevent_thread_lock=not block,
    )
    return demo
