"""The front door: `import diffsteer` stays cheap, `diffsteer.load` does what the commands do, and
every ```python block of docs/python-api.md and README.md runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import diffsteer
from diffsteer.generate import ImageRequest, SteeredGenerator

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("docs/python-api.md", "README.md")


def python_blocks(document: str) -> list[str]:
    text = (ROOT / document).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


EXAMPLES = [(doc, i) for doc in DOCUMENTS if (ROOT / doc).is_file() for i in range(len(python_blocks(doc)))]


def test_the_api_page_has_both_examples() -> None:
    blocks = python_blocks("docs/python-api.md")
    assert any(".audit(" in b for b in blocks) and any("diffsteer.steer(" in b for b in blocks)


@pytest.mark.parametrize(("document", "index"), EXAMPLES, ids=[f"{d}-{i}" for d, i in EXAMPLES])
def test_python_blocks_run_as_written(
    document: str, index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples write runs/ and directions/ where they run
    code = python_blocks(document)[index]
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, f"{document} python block {index}", "exec"), namespace)  # noqa: S102
    if ".audit(" in code:  # what the notebook example promises: a report of the mitigations asked for
        result = namespace["result"]
        assert result.report.is_file()
        assert {"none", "hspace-fair"} <= {row.mitigation for row in result.summary.results}
    if "diffsteer.steer(" in code:  # and the steering example: steered images, then a clean pipeline
        pipe = namespace["pipe"]
        assert len(namespace["images"]) == 4
        assert "prepare_latents" not in vars(pipe) and "encode_prompt" not in vars(pipe)
        assert not pipe.unet.mid_block._forward_hooks


def test_import_diffsteer_does_not_import_torch() -> None:
    code = "import sys, diffsteer; print(diffsteer.__version__, 'torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [diffsteer.__version__, "False"]


def test_the_front_door_names_resolve() -> None:
    from diffsteer.audit import AuditConfig
    from diffsteer.runs.store import RunStore
    from diffsteer.steering.attach import steer
    from diffsteer.steering.preset import SteeringSpec

    assert diffsteer.AuditConfig is AuditConfig and diffsteer.SteeringSpec is SteeringSpec
    assert diffsteer.RunStore is RunStore and diffsteer.steer is steer
    assert callable(diffsteer.load)
    assert set(diffsteer.__all__) <= set(dir(diffsteer))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        diffsteer.nonsense  # noqa: B018


@pytest.fixture(scope="module")
def bundled() -> diffsteer.Model:
    model = diffsteer.load()  # no name: the first registered bundled model
    assert model.name == "pictoworld"
    return model


def test_generate_steers_like_the_pipeline_call_and_the_generator(bundled: diffsteer.Model) -> None:
    prompt, seeds, guidance = "a photo of a doctor", [3, 4], 7.5
    steered = bundled.generate(prompt, images_per_prompt=2, seed=3, guidance=guidance, hspace="woman")
    plain = bundled.generate(prompt, images_per_prompt=2, seed=3, guidance=guidance)
    with bundled.steer(hspace="woman"):
        called = bundled.pipe(
            [prompt] * 2,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            guidance_scale=guidance,
            num_inference_steps=20,
        ).images
    gen = SteeredGenerator(bundled.pipe, steps=20, guidance=guidance, batch_size=2)
    reference = [out.image for out in gen.generate([ImageRequest(prompt, s) for s in seeds])]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(steered, called, strict=True))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, reference, strict=True))
    assert not np.array_equal(np.asarray(steered[0]), np.asarray(plain[0]))


def test_generate_uses_the_models_own_guidance_and_reports_progress(bundled: diffsteer.Model) -> None:
    seen: list[tuple[str, int, int]] = []
    images = bundled.generate(
        ["a photo of a chef", "a photo of a pilot"], batch_size=1, progress=lambda *a: seen.append(a)
    )
    assert bundled.guidance == 1.25 and len(images) == 2
    assert seen == [("generate", 0, 2), ("generate", 1, 2), ("generate", 2, 2)]


def test_bad_front_door_input_names_the_parameter(bundled: diffsteer.Model) -> None:
    with pytest.raises(ValueError, match="images_per_prompt"):
        bundled.generate("a photo of a doctor", images_per_prompt=0)
    with pytest.raises(ValueError, match="unknown audit option.*images_per_promt"):
        bundled.audit("unused", images_per_promt=4)
    with pytest.raises(ValueError, match="model must be"):
        diffsteer.load(42)
    with pytest.raises(ValueError, match="by name or folder"):
        diffsteer.load(bundled.pipe).audit("unused")


def test_learn_hspace_saves_where_steer_finds_it(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = diffsteer.load(tiny_model_dirs["sd1"])
    model.pipe.set_progress_bar_config(disable=True)
    stages: set[str] = set()
    vector = model.learn_hspace(
        "woman",
        "a photo of a woman",
        "a photo of a person",
        images=4,
        steps=3,
        inference_steps=2,
        batch_size=4,
        progress=lambda stage, *_: stages.add(stage),
    )
    assert (tmp_path / "directions" / "woman.hspace.safetensors").is_file() and stages
    assert vector.metadata["base_model"] == str(tiny_model_dirs["sd1"])
    steered = model.generate("a photo of a person", steps=2, hspace="woman:50")
    plain = model.generate("a photo of a person", steps=2)
    assert not np.array_equal(np.asarray(steered[0]), np.asarray(plain[0]))
