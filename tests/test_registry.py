"""The registry of bundled models: plugins fill it, users register, the core never names a bundled model."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from diffsteer import registry
from diffsteer.registry import PluginWarning, Registry

SRC = Path(__file__).resolve().parents[1] / "src" / "diffsteer"
PLUGIN = SRC / "pictoworld"


# ---------------------------------------------------------------------------------------------------
# The rule: no core module imports the bundled model or singles it out by name


def _imported(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[str]:
    """Every module or name an import statement reaches, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    parent = package[: len(package) - node.level + 1] if node.level else []
    base = ".".join([*parent, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _violations(source: str, module: str) -> list[str]:
    """Imports of diffsteer.pictoworld and the literal "pictoworld" in one module, as 'line: what'."""
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            hits = [n for n in _imported(node, package) if n.split(".")[:2] == ["diffsteer", "pictoworld"]]
            if hits:
                found.append(f"{node.lineno}: imports {hits[-1]}")
        # a default, a comparison or a key spelled "pictoworld" is a special case of the core
        if isinstance(node, ast.Constant) and node.value == "pictoworld":
            found.append(f"{node.lineno}: the literal 'pictoworld'")
    return found


def test_no_core_module_imports_or_names_the_bundled_model() -> None:
    core = [p for p in sorted(SRC.rglob("*.py")) if PLUGIN not in p.parents]
    assert len(core) > 40  # the scan really walked the package
    violations = []
    for path in core:
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        violations += [f"{path}:{v}" for v in _violations(path.read_text(encoding="utf-8"), module)]
    assert violations == []


@pytest.mark.parametrize(
    "source",
    [
        "import diffsteer.pictoworld\n",
        "from diffsteer import pictoworld\n",
        "from diffsteer.pictoworld.world import PROFESSIONS\n",
        "def f():\n    from .pictoworld import render\n",
        "def f():\n    from ..pictoworld import render\n",
        "def f(model='pictoworld'):\n    pass\n",
        "if model == 'pictoworld':\n    pass\n",
    ],
)
def test_the_scan_catches_each_way_of_naming_the_bundled_model(source: str) -> None:
    module = "diffsteer.steering.probe" if ".." in source else "diffsteer.probe"
    assert len(_violations(source, module)) == 1
    harmless = "from diffsteer import registry\nsource = 'pictoworld renders'\n"
    assert _violations(harmless, "diffsteer.probe") == []


# ---------------------------------------------------------------------------------------------------
# pictoworld through its entry point: every default as before


def test_pictoworld_registers_through_its_entry_point_with_its_defaults() -> None:
    from diffsteer import pictoworld
    from diffsteer.assess import resolve_reference
    from diffsteer.audit import AuditConfig, resolve
    from diffsteer.steering.library import SteeringLibrary

    fresh = Registry()
    assert fresh.default_model() == "pictoworld" and fresh.plugin_failures == {}
    entry = fresh.model("pictoworld")
    assert entry is not None and entry.pipeline_folder() == pictoworld.pipeline_dir()

    # `diffsteer audit` with no arguments: pictoworld, its CLIP, guidance 1.25, its benchmark
    config, bench, axes = resolve(AuditConfig())
    assert config.model == "pictoworld" and config.guidance == 1.25
    assert config.benchmark == "pictoworld" and bench.name == "pictoworld" and bench.images_per_prompt == 192
    assert config.classifier == str(pictoworld.clip_dir())
    assert [a.name for a in axes] == ["gender", "skin_tone"]
    # its bundled steering folder, then its reference renders
    assert SteeringLibrary.for_model("pictoworld").find("woman", "hspace").parent == pictoworld.steering_dir()
    reference = resolve_reference("auto", "pictoworld")
    assert reference is not None and reference.source == "pictoworld renders"
    assert len(reference.images) == pictoworld.REFERENCE_SIZE
    assert resolve_reference("auto", "some/other/model") is None


def test_plugins_load_only_when_a_name_is_first_looked_up() -> None:
    code = (
        "import sys\n"
        "import diffsteer.benchmarks, diffsteer.registry\n"
        "assert not [m for m in sys.modules if m.startswith('diffsteer.pictoworld')]\n"
        "print(diffsteer.benchmarks.builtin_benchmarks())\n"
        "assert 'diffsteer.pictoworld.plugin' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['entigen', 'winobias', 'pictoworld']"


# ---------------------------------------------------------------------------------------------------
# Plugins: once, and a broken one warns instead of crashing


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


def test_each_plugin_is_called_once_and_a_broken_one_warns_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def register(reg: Registry) -> None:
        calls.append(reg)
        reg.register_model("good-model", "/nowhere", guidance=2.0)

    plugins = [
        FakeEntryPoint("broken", "no_such_package.plugin:register", ModuleNotFoundError("no_such_package")),
        FakeEntryPoint("good", "good.plugin:register", register),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: plugins if group == "test.plugins" else [])
    reg = Registry(group="test.plugins")
    assert calls == []  # nothing loads before the first look-up
    with pytest.warns(PluginWarning, match=r"plugin 'broken' \(no_such_package.plugin:register\)") as caught:
        assert reg.model("good-model").guidance == 2.0
    assert len(caught) == 1
    assert reg.models() == ["good-model"] and reg.default_model() == "good-model"
    assert calls == [reg]
    assert reg.plugin_failures == {"broken": "ModuleNotFoundError: no_such_package"}


def test_a_look_up_from_another_thread_waits_for_the_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()

    def slow_register(reg: Registry) -> None:
        started.set()
        time.sleep(0.3)  # the other thread looks up meanwhile
        reg.register_model("slow-model", "/nowhere")

    plugins = [FakeEntryPoint("slow", "slow:register", slow_register)]
    monkeypatch.setattr(registry, "entry_points", lambda group: plugins)
    reg = Registry()
    first = threading.Thread(target=reg.load_plugins)
    first.start()
    started.wait(5)
    seen = reg.model("slow-model")  # while the plugin is still registering
    first.join()
    assert seen is not None and seen.name == "slow-model"


def test_a_missing_model_names_the_plugin_that_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsteer.models import ModelNotFoundError, load_pipeline

    plugins = [FakeEntryPoint("broken", "broken:register", ImportError("needs libfoo"))]
    monkeypatch.setattr(registry, "entry_points", lambda group: plugins)
    monkeypatch.setattr(registry, "REGISTRY", Registry())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(PluginWarning):
        with pytest.raises(ValueError, match="no bundled model is registered; plugin 'broken' failed"):
            registry.default_model()
    with pytest.raises(
        ModelNotFoundError, match=r"none registered; plugin broken failed: ImportError: needs"
    ):
        load_pipeline("my-model")


def test_registration_errors_name_the_parameter() -> None:
    reg = Registry(group=None)
    with pytest.raises(ValueError, match="model name must be a non-empty string"):
        reg.register_model(" toy", "/x")
    with pytest.raises(ValueError, match="'toy': guidance must be a number at least 0, got -1"):
        reg.register_model("toy", "/x", guidance=-1)
    with pytest.raises(ValueError, match="'toy': reference must be a function"):
        reg.register_model("toy", "/x", reference="renders")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loader for benchmark 'b' is not callable"):
        reg.register_benchmark("b", "prompts.yaml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model: no bundled model is registered; name a local"):
        reg.default_model()


# ---------------------------------------------------------------------------------------------------
# A user's own model, registered with one call and built from config


@pytest.fixture
def toy_model(tmp_path: Path) -> dict[str, Any]:
    """A tiny SD pipeline, a tiny CLIP and a steering file learned on the pipeline, saved in folders."""
    from diffsteer.steering.text_embedding import learn_text_offset
    from diffsteer.testing import tiny_clip, tiny_sd_pipeline

    pipe = tiny_sd_pipeline("sd1")
    pipe.save_pretrained(tmp_path / "pipeline")
    clip, tokenizer = tiny_clip(seed=3)
    clip.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    offset = learn_text_offset(
        pipe, "woman", ["a photo of a woman"], ["a photo of a person"], base_model="toy", axis="gender"
    )
    steering = offset.save(tmp_path / "steering")
    return {"root": tmp_path, "pipe": pipe, "steering_file": steering}


def test_a_user_registered_model_is_found_by_name_everywhere(
    toy_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsteer.assess import resolve_reference
    from diffsteer.attributes import ClipZeroShotClassifier
    from diffsteer.audit import AuditConfig, resolve
    from diffsteer.benchmarks.spec import Benchmark, PromptSpec
    from diffsteer.models import default_classifier, default_guidance, load_pipeline, model_fingerprint
    from diffsteer.reference import ReferenceSet
    from diffsteer.steering.library import SteeringLibrary, bundled_steering_dir

    monkeypatch.setattr(registry, "REGISTRY", Registry())  # the installed plugins, plus what we add
    monkeypatch.chdir(toy_model["root"])  # no ./directions of the developer's in the search
    root = toy_model["root"]
    toy_bench = Benchmark(
        name="toy-bench",
        prompts=(
            PromptSpec(id="toy/doctor", text="a photo of a doctor", group="profession", subject="doctor"),
        ),
        axes=("gender",),
        images_per_prompt=3,
        provenance="test",
    )
    reference = ReferenceSet(source="toy", images=[Image.new("RGB", (32, 32))], labels={"gender": ["woman"]})
    registry.register_benchmark("toy-bench", lambda: toy_bench)
    registry.register_model(
        "toy",
        lambda: root / "pipeline",
        classifier=root / "clip",
        guidance=3.0,
        benchmark="toy-bench",
        reference=lambda: reference,
        steering_dir=root / "steering",
    )

    # loading by name gives the saved pipeline
    pipe = load_pipeline("toy")
    assert model_fingerprint(pipe) == model_fingerprint(toy_model["pipe"])
    # its guidance, classifier, benchmark and reference are the defaults of an audit of it
    assert default_guidance("toy") == 3.0 and default_guidance(str(root / "pipeline")) == 7.5
    assert default_classifier("toy") == str(root / "clip")
    assert ClipZeroShotClassifier.from_pretrained(default_classifier("toy")).classifier_id == str(
        root / "clip"
    )
    config, bench, _ = resolve(AuditConfig(model="toy"))
    assert (config.guidance, config.classifier, config.benchmark) == (3.0, str(root / "clip"), "toy-bench")
    assert bench.prompts == toy_bench.prompts
    assert resolve_reference("auto", "toy") is reference
    # its steering folder is searched after the user's own, by name
    assert bundled_steering_dir("toy") == root / "steering"
    assert SteeringLibrary.for_model("toy").find("woman", "text") == toy_model["steering_file"]
    # the plugins registered first, so the default model is still the bundled one
    assert registry.default_model() == "pictoworld"
    assert registry.bundled_models() == ["pictoworld", "toy"]


def test_the_cli_without_any_bundled_model_asks_for_one_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from diffsteer.cli import app

    monkeypatch.setattr(registry, "REGISTRY", Registry(group=None))
    result = CliRunner().invoke(app, ["audit", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "error: model: no bundled model is registered; name a local pipeline folder or a hub id" in text
    assert "Traceback" not in text and not (tmp_path / "run").exists()


def test_the_bundled_model_adds_its_own_command_group() -> None:
    from typer.testing import CliRunner

    from diffsteer.cli import app

    result = CliRunner().invoke(app, ["pictoworld", "train", "--preset", "huge", "--out", "/nonexistent"])
    assert result.exit_code == 2  # refused before any training starts
    assert "error:" in result.output and "huge" in result.output and "Traceback" not in result.output
