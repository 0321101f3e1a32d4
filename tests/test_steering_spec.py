"""Steering specs and presets, fair assignment, responsible-prompt rules, finding steering files."""

from collections import Counter

import pytest
import torch

from diffsteer.steering.fair import fair_choice, fair_choices, parse_target
from diffsteer.steering.files import SteeringFileError, save_steering_file
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.preset import (
    FairSpec,
    PresetError,
    SteeringItem,
    SteeringSpec,
    load_preset,
    parse_item,
    resolve_steering,
    save_preset,
)
from diffsteer.steering.responsible import read_prompt


def test_parse_item_name_strength_and_paths():
    assert parse_item("woman") == SteeringItem("woman", None)
    assert parse_item("woman:0.5") == SteeringItem("woman", 0.5)
    assert parse_item("dirs/woman.hspace.safetensors:-2") == SteeringItem(
        "dirs/woman.hspace.safetensors", -2.0
    )
    with pytest.raises(PresetError, match="not a number"):
        parse_item("woman:strong")
    with pytest.raises(PresetError, match="empty"):
        parse_item(" ")


def test_preset_round_trip(tmp_path):
    spec = SteeringSpec(
        hspace=(SteeringItem("woman", 1.0), SteeringItem("dark")),
        noise=(SteeringItem("man", 3.0),),
        fair=FairSpec(("gender",), "noise", {"man": 0.3, "woman": 0.7}),
        safe=True,
        responsible=True,
    )
    path = save_preset(spec, tmp_path / "p.yaml")
    assert load_preset(path) == spec


def test_preset_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hspace:\n  - {name: woman, strenght: 1}\n")
    with pytest.raises(PresetError, match=r"bad.yaml: hspace\[0\]: unknown field"):
        load_preset(bad)
    bad.write_text("fair: {axes: [gender], method: magic}\n")
    with pytest.raises(PresetError, match="fair.method"):
        load_preset(bad)
    bad.write_text("hspace: [woman\n")
    with pytest.raises(PresetError, match="bad.yaml:.*not valid YAML"):
        load_preset(bad)
    with pytest.raises(PresetError, match="not found"):
        load_preset(tmp_path / "missing.yaml")


def test_preset_names_are_relative_to_the_preset(tmp_path):
    (tmp_path / "vecs").mkdir()
    f = tmp_path / "vecs" / "w.hspace.safetensors"
    f.write_bytes(b"x")
    (tmp_path / "p.yaml").write_text("hspace: [{name: vecs/w.hspace.safetensors}]\ndirections: [vecs]\n")
    spec = load_preset(tmp_path / "p.yaml")
    assert spec.hspace[0].name == str(f.resolve())
    assert spec.directions == (str((tmp_path / "vecs").resolve()),)


def test_options_merge_with_preset(tmp_path):
    (tmp_path / "p.yaml").write_text("hspace: [woman]\n")
    spec = resolve_steering(
        tmp_path / "p.yaml", hspace=["dark:0.5"], fair="gender", fair_target="woman=3,man=1"
    )
    assert [i.name for i in spec.hspace] == ["woman", "dark"]
    assert spec.fair == FairSpec(("gender",), "hspace", {"woman": 3.0, "man": 1.0})
    assert resolve_steering(None) is None
    with pytest.raises(PresetError, match="--fair-target needs --fair"):
        resolve_steering(None, fair_target="woman=1")
    with pytest.raises(ValueError, match="class=share"):
        parse_target("woman")


def test_fair_choice_matches_the_target_over_consecutive_seeds():
    counts = Counter(fair_choice(s, ["man", "woman"]) for s in range(64))
    assert abs(counts["man"] - 32) <= 1
    skewed = Counter(fair_choice(s, ["man", "woman"], {"man": 0.25, "woman": 0.75}) for s in range(100))
    assert abs(skewed["woman"] - 75) <= 2
    # the same seed always gets the same class
    assert [fair_choice(s, ["a", "b"]) for s in range(10)] == [fair_choice(s, ["a", "b"]) for s in range(10)]


def test_two_axes_are_balanced_jointly():
    pairs = Counter(
        tuple(fair_choices(s, [(["man", "woman"], None), (["light", "dark"], None)])) for s in range(64)
    )
    assert len(pairs) == 4 and all(12 <= n <= 20 for n in pairs.values())


@pytest.mark.parametrize(
    ("prompt", "axes", "avoid"),
    [
        ("a photo of a doctor, either male or female", ("gender",), ()),
        (
            "a photo of a lawyer if all individuals can be a lawyer irrespective of their gender",
            ("gender",),
            (),
        ),
        ("a photo of a soldier without violence", (), ("violence",)),
        ("a photo of a nurse of any skin color, male or female", ("gender", "skin_tone"), ()),
        ("a photo of a doctor", (), ()),
        ("a photo of a female doctor", (), ()),
    ],
)
def test_responsible_prompt_rules(prompt, axes, avoid):
    asked = read_prompt(prompt)
    assert asked.fair_axes == axes and asked.avoid == avoid


def _write(folder, name, kind, **meta):
    return save_steering_file(
        folder / f"{name}.{kind}.safetensors", {"vector": torch.zeros(2)}, {"diffsteer_kind": kind, **meta}
    )


def test_library_finds_by_name_axis_and_anti_concept(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "woman", "hspace", axis="gender", class_name="woman")
    _write(b, "woman", "hspace")  # shadowed: the first folder wins
    _write(b, "man", "hspace")  # found by its name equal to the class
    _write(b, "anti-violence", "hspace")
    _write(b, "woman", "noise")
    (b / "broken.hspace.safetensors").write_bytes(b"not a safetensors file")
    lib = SteeringLibrary([a, b])
    assert lib.find("woman", "hspace") == a / "woman.hspace.safetensors"
    assert lib.find("woman", "noise") == b / "woman.noise.safetensors"
    assert lib.for_axis("gender", ["man", "woman"], "hspace") == {
        "man": b / "man.hspace.safetensors",
        "woman": a / "woman.hspace.safetensors",
    }
    assert lib.anti_concepts() == [b / "anti-violence.hspace.safetensors"]
    with pytest.raises(SteeringFileError, match=r"no hspace steering file named 'dark'.*available: .*woman"):
        lib.find("dark", "hspace")
    with pytest.raises(SteeringFileError, match="missing light, dark"):
        lib.for_axis("skin_tone", ["light", "dark"], "hspace")
    with pytest.raises(SteeringFileError, match="not found"):
        lib.find(str(tmp_path / "nope.hspace.safetensors"), "hspace")
    with pytest.raises(SteeringFileError, match="not a readable safetensors"):
        from diffsteer.steering.files import read_steering_file

        read_steering_file(b / "broken.hspace.safetensors")


def test_bundled_model_folder_is_searched_last(tmp_path):
    lib = SteeringLibrary.for_model("pictoworld", [tmp_path])
    assert lib.folders[0] == tmp_path and lib.folders[-1].name == "steering"
    assert SteeringLibrary.for_model("some/hub-model").folders[-1].name == "directions"
