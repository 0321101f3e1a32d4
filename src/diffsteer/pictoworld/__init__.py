"""Pictoworld: the bundled synthetic world, its trained models, and its benchmark.

Importing this package registers the bundled model "pictoworld" (the default model of every
command) and the benchmark "pictoworld" (one neutral prompt per profession of the world).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from diffsteer.benchmarks import register_benchmark
from diffsteer.benchmarks.spec import Benchmark, PromptSpec
from diffsteer.models import register_bundled_model
from diffsteer.pictoworld.world import PROFESSIONS, article

NAME = "pictoworld"
DEFAULT_IMAGES_PER_PROMPT = 96


def weights_dir() -> Path:
    """Folder of the bundled weights (pipeline/, clip/, oracle/, training_record.json)."""
    return Path(str(resources.files("diffsteer.pictoworld") / "weights"))


def pipeline_dir() -> Path:
    return weights_dir() / "pipeline"


def clip_dir() -> Path:
    return weights_dir() / "clip"


def oracle_dir() -> Path:
    return weights_dir() / "oracle"


def load_benchmark() -> Benchmark:
    prompts = tuple(
        PromptSpec(
            id=f"profession/neutral/{p}",
            text=f"a photo of {article(p)} {p}",
            group="profession",
            subject=p,
        )
        for p in PROFESSIONS
    )
    return Benchmark(
        name=NAME,
        prompts=prompts,
        axes=("gender", "skin_tone"),
        images_per_prompt=DEFAULT_IMAGES_PER_PROMPT,
        provenance="diffsteer's synthetic world; planted shares in diffsteer/pictoworld/world.py",
    )


register_bundled_model(NAME, pipeline_dir)
register_benchmark(NAME, load_benchmark)
