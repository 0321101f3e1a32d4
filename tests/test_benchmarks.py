"""Benchmarks as a user meets them: the bundled prompt sets, selection, YAML files and their errors."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from diffsteer import registry
from diffsteer.benchmarks import (
    Benchmark,
    BenchmarkError,
    PromptSpec,
    builtin_benchmarks,
    load_benchmark,
    register_benchmark,
)
from diffsteer.benchmarks.entigen import extended_professions


def test_entigen_loads_every_csv_row_with_its_category_and_type() -> None:
    bench = load_benchmark("entigen")
    assert len(bench) == 246
    assert bench.axes == ("gender", "skin_tone")
    assert bench.images_per_prompt == 9
    assert "3c634ba" in bench.provenance
    assert Counter(p.group for p in bench.prompts) == {"profession": 175, "object": 56, "culture": 15}
    assert Counter(p.kind for p in bench.prompts) == {"neutral": 36, "ethical": 138, "irrelevant": 72}
    assert len({p.id for p in bench.prompts}) == 246


def test_entigen_neutral_professions_have_readable_ids() -> None:
    professions = load_benchmark("entigen").select("profession")
    assert len(professions) == 25
    by_id = {p.id: p for p in professions.prompts}
    doctor = by_id["profession/neutral/doctor"]
    assert (doctor.text, doctor.subject, doctor.kind) == ("a photo of a doctor", "doctor", "neutral")
    assert by_id["profession/neutral/flight-attendant"].subject == "flight attendant"
    assert professions.total_images == 25 * 9


def test_entigen_select_by_kind_and_category() -> None:
    bench = load_benchmark("entigen")
    assert len(bench.select()) == 36
    assert len(bench.select(kinds=None)) == 246
    ethical_culture = bench.select("culture", kinds=["ethical"])
    assert [p.text for p in ethical_culture.prompts][-1] == "a photo of a wedding from diverse cultures"
    assert len(ethical_culture) == 6
    objects = bench.select("object", kinds=("neutral", "irrelevant"))
    assert len(objects) == 8 + 16
    assert objects.name == "entigen" and objects.axes == bench.axes


def test_entigen_extended_professions_are_shipped() -> None:
    professions = extended_professions()
    assert len(professions) == 85
    assert "accountant" in professions


def test_bundled_data_and_provenance_ship_inside_the_package() -> None:
    data = resources.files("diffsteer.benchmarks").joinpath("data")
    provenance = data.joinpath("PROVENANCE.md").read_text("utf-8")
    assert "Bansal et al., EMNLP 2022" in provenance and "3c634ba" in provenance
    assert "Li et al., CVPR 2024" in provenance
    assert "MIT License" in data.joinpath("entigen").joinpath("LICENSE").read_text("utf-8")


def test_winobias_has_five_templates_per_profession() -> None:
    bench = load_benchmark("winobias")
    assert len(bench) == 180
    assert bench.axes == ("gender",)
    assert bench.images_per_prompt == 100
    assert len(bench.categories) == 36
    assert Counter(p.group for p in bench.prompts) == dict.fromkeys(bench.categories, 5)
    texts = {p.text for p in bench.prompts}
    assert {"Image of an analyst", "Photo of a CEO", "Headshot of a construction worker"} <= texts
    assert "Portrait of a doctor" in texts
    doctor = {p.id: p for p in bench.prompts}["winobias/doctor/photo"]
    assert (doctor.group, doctor.subject, doctor.kind) == ("doctor", "doctor", "neutral")


def test_winobias_select_one_profession_case_insensitively() -> None:
    ceo = load_benchmark("winobias").select("ceo")
    assert [p.text for p in ceo.prompts] == [
        "Image of a CEO",
        "Picture of a CEO",
        "Photo of a CEO",
        "Headshot of a CEO",
        "Portrait of a CEO",
    ]


def test_unknown_category_names_the_valid_ones() -> None:
    with pytest.raises(BenchmarkError, match=r"unknown category 'animal'.*profession, object, culture"):
        load_benchmark("entigen").select("animal")


def test_kind_missing_from_benchmark_is_reported() -> None:
    with pytest.raises(BenchmarkError, match="no prompts of kind ethical .*kinds present: neutral"):
        load_benchmark("winobias").select(kinds=["ethical"])
    with pytest.raises(BenchmarkError, match="unknown prompt kind 'biased'"):
        load_benchmark("entigen").select(kinds=["biased"])


def test_unknown_benchmark_lists_builtins(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(str(missing))
    assert str(info.value) == (
        f"unknown benchmark '{missing}': not a built-in (entigen, winobias, pictoworld) "
        f"and no file at {missing}"
    )


def test_known_axes_reject_a_builtin_the_classifier_cannot_score() -> None:
    assert load_benchmark("winobias", known_axes={"gender"}).axes == ("gender",)
    with pytest.raises(BenchmarkError, match=r"'entigen' uses unknown axis 'skin_tone' \(known: gender\)"):
        load_benchmark("entigen", known_axes=["gender"])


def test_registered_benchmark_loads_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", registry.Registry(group=None))  # no plugins
    toy = Benchmark(
        name="toy",
        prompts=(PromptSpec(id="toy/0", text="a red square", group="shape", subject="square"),),
        axes=("colour",),
        images_per_prompt=2,
        provenance="made up",
    )
    register_benchmark("toy", lambda: toy)
    assert builtin_benchmarks() == ["entigen", "winobias", "toy"]
    assert load_benchmark("toy") is toy
    with pytest.raises(BenchmarkError, match="unknown axis 'colour'"):
        load_benchmark("toy", known_axes=["gender"])
    with pytest.raises(BenchmarkError, match="built in and cannot be replaced"):
        register_benchmark("entigen", lambda: toy)
    register_benchmark("broken", lambda: "not a benchmark")  # type: ignore[arg-type, return-value]
    with pytest.raises(BenchmarkError, match="returned str, not a Benchmark"):
        load_benchmark("broken")


def test_duplicate_prompt_ids_are_refused_in_code_too() -> None:
    prompt = PromptSpec(id="x", text="a", group="g", subject=None)
    with pytest.raises(BenchmarkError, match="duplicate prompt id 'x'"):
        Benchmark(name="b", prompts=(prompt, prompt), axes=("gender",), images_per_prompt=1, provenance="")


HAPPY = """\
axes: [gender, skin_tone]
images_per_prompt: 16
prompts:
  - a photo of a doctor
  - text: a photo of a nurse
    group: profession
    subject: nurse
  - text: |
      a photo of a person wearing a scarf
    id: scarf
    group: object
    subject: scarf
    kind: neutral
    axes: [gender]
    images: 4
"""


def test_yaml_benchmark_happy_path(tmp_path: Path) -> None:
    path = tmp_path / "my-bench.yaml"
    path.write_text(HAPPY)
    bench = load_benchmark(str(path), known_axes=["gender", "skin_tone", "culture"])
    assert bench.name == "my-bench"
    assert bench.axes == ("gender", "skin_tone")
    assert [p.id for p in bench.prompts] == ["custom/0", "custom/1", "scarf"]
    assert bench.prompts[0] == PromptSpec(
        id="custom/0", text="a photo of a doctor", group="custom", subject=None
    )
    assert (bench.prompts[1].group, bench.prompts[1].subject) == ("profession", "nurse")
    scarf = bench.prompts[2]
    assert scarf.text == "a photo of a person wearing a scarf"
    assert bench.axes_for(scarf) == ("gender",)
    assert bench.axes_for(bench.prompts[0]) == ("gender", "skin_tone")
    assert bench.images_for(scarf) == 4
    assert bench.total_images == 16 + 16 + 4
    assert str(path) in bench.provenance


def test_yaml_defaults_and_explicit_name(tmp_path: Path) -> None:
    path = tmp_path / "b.yml"
    path.write_text("name: tiny\nprompts: [a photo of a chef]\n")
    bench = load_benchmark(str(path))
    assert (bench.name, bench.axes, bench.images_per_prompt) == ("tiny", ("gender",), 8)


BAD_FILES = [
    ("prompts:\n  - a\n  - [b\n", 4, "invalid YAML"),
    ("- a photo of a doctor\n", 1, "top level: must be a mapping with a 'prompts' list, got a list"),
    ("", 1, "top level: the file is empty"),
    ("name: x\ncolour: red\nprompts: [a]\n", 2, "colour: unknown key (allowed: name, axes,"),
    ("name: x\nname: y\nprompts: [a]\n", 2, "name: duplicate key (first given on line 1)"),
    ("name: x\n", 1, "prompts: missing"),
    ("prompts: []\n", 1, "prompts: must be a non-empty list of prompts, got an empty list"),
    ("prompts: a photo\n", 1, "prompts: must be a non-empty list of prompts, got str 'a photo'"),
    (
        "name: x\naxes: [gender]\nprompts:\n  - a\n  - text: b\n    id: b\n  - text: '   '\n",
        7,
        "prompts[2].text: must be a non-empty string, got a blank string",
    ),
    ("prompts:\n  - a\n  - ''\n", 3, "prompts[1].text: must be a non-empty string"),
    ("prompts:\n  - a\n  - 42\n", 3, "prompts[1].text: must be a non-empty string, got int 42"),
    ("prompts:\n  - [a, b]\n", 2, "prompts[0]: must be a string or a mapping with 'text', got a list"),
    ("prompts:\n  - group: x\n", 2, "prompts[0].text: missing"),
    ("prompts:\n  - text: a\n    colour: red\n", 3, "prompts[0].colour: unknown key (allowed: text, id,"),
    (
        "prompts:\n  - text: a\n    id: same\n  - text: b\n    id: same\n",
        5,
        "prompts[1].id: duplicate id 'same' (also prompts[0], line 3)",
    ),
    ("prompts:\n  - a\n  - text: b\n    id: custom/0\n", 4, "prompts[1].id: duplicate id 'custom/0'"),
    ("images_per_prompt: 0\nprompts: [a]\n", 1, "images_per_prompt: must be a positive integer, got int 0"),
    ("images_per_prompt: true\nprompts: [a]\n", 1, "images_per_prompt: must be a positive integer"),
    ("images_per_prompt: 2.5\nprompts: [a]\n", 1, "images_per_prompt: must be a positive integer"),
    (
        "prompts:\n  - text: a\n    images: -3\n",
        3,
        "prompts[0].images: must be a positive integer, got int -3",
    ),
    ("axes: gender\nprompts: [a]\n", 1, "axes: must be a non-empty list of axis names"),
    ("axes: [gender, gender]\nprompts: [a]\n", 1, "axes[1]: axis 'gender' is listed twice"),
    ("prompts:\n  - text: a\n    kind: biased\n", 3, "prompts[0].kind: unknown kind 'biased'"),
    (
        "prompts:\n  - text: a\n    subject: [x]\n",
        3,
        "prompts[0].subject: must be a non-empty string, got a list",
    ),
]


@pytest.mark.parametrize(("content", "line", "message"), BAD_FILES)
def test_yaml_errors_name_file_line_and_field(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(content)
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert message in text, text
    assert "\n" not in text


def test_yaml_unknown_axis_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("axes: [gender]\nprompts:\n  - text: a\n    axes:\n      - gender\n      - age\n")
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(str(path), known_axes=["skin_tone", "gender"])
    assert str(info.value) == f"{path}:6: prompts[0].axes[1]: unknown axis 'age' (known: gender, skin_tone)"
    path.write_text("prompts: [a]\n")
    with pytest.raises(BenchmarkError, match=r":1: axes: unknown axis 'gender' \(known: skin_tone\)"):
        load_benchmark(str(path), known_axes=["skin_tone"])


def test_yaml_directory_is_not_a_benchmark(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="only a directory at"):
        load_benchmark(str(tmp_path))
