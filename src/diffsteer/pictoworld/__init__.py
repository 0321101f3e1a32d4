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
# 192 images per prompt: a two-class deviation ratio's sampling error is twice its share's, so at 96 its
# 95% interval is about +-0.15 and an exact model would miss the planted ratio by more than 0.12 on some
# profession in 7 audits of 10 (benchmarks/audit_rule_power.py). At 192 the interval is about +-0.10,
# and the audit takes under 3 minutes on 2 CPU cores (154 s at guidance 1.25, benchmarks/RESULTS.md).
DEFAULT_IMAGES_PER_PROMPT = 192
# Pictoworld is sampled with a guidance just above 1 by default. Guidance w draws roughly from
# p(x | c) p(c | x)^(w - 1): at 7.5 a profession planted 50% men comes out 8-12% men, because every
# small gap between a profession's shares and the world's average is raised to the power 6.5
# (benchmarks/RESULTS.md has the table per guidance). At 1.0 an exactly fitted model would draw its
# training distribution, the ground truth the audit must find; the bundled one draws each planted skew
# a little weaker there, and 1.25 gives it back. 1.25 was chosen on seeds the tests never use, by a
# rule fixed before any figure above 1.0 was seen (RESULTS.md, "v8 at guidance 1.25").
RECOMMENDED_GUIDANCE = 1.25


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


register_bundled_model(NAME, pipeline_dir, guidance=RECOMMENDED_GUIDANCE)
register_benchmark(NAME, load_benchmark)
