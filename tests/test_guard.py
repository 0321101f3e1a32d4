"""The prompt guard on tiny SD1 and SDXL pipelines built from config: training, files, checks, refusals."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.guard import GuardMismatchError, PromptGuard, train_guard, word_similarity
from diffsteer.guard.embeddings import encode_conditions, text_encoder_fingerprint
from diffsteer.guard.guard_file import GuardFileError, read_guard
from diffsteer.testing import TEST_VOCABULARY, tiny_sd_pipeline
from diffsteer.tokenizer import build_word_tokenizer

runner = CliRunner()
SUBJECTS = ("doctor", "nurse", "pilot", "chef", "lawyer", "person")


def _captions() -> list[str]:
    out = []
    for s in SUBJECTS:
        out += [f"a photo of a {s}", f"a photo of a male {s}", f"a photo of a female {s}"]
        out += [f"a photo of a {s} in a western setting", f"a photo of a {s} in a non-western setting"]
        out += [
            f"a photo of a {s} wearing a scarf",
            f"a photo of a {s} with a weapon",
            f"a photo of a {s} with blood",
        ]
    return out


def _pipe(kind: str, seed: int = 0):
    """A tiny pipeline whose vocabulary also knows two words of the violence concept."""
    pipe = tiny_sd_pipeline(kind, seed=seed)
    pipe.tokenizer = build_word_tokenizer([*TEST_VOCABULARY, "weapon blood"], max_length=32)
    if kind == "sdxl":
        pipe.tokenizer_2 = build_word_tokenizer([*TEST_VOCABULARY, "weapon blood"], max_length=32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """{kind: (pipeline folder, guard file, pipe)} for sd1 and sdxl, each guard trained on the captions."""
    root = tmp_path_factory.mktemp("guard")
    out = {}
    for kind in ("sd1", "sdxl"):
        pipe = _pipe(kind)
        pipe.save_pretrained(root / kind)
        result = train_guard(
            pipe,
            _captions(),
            root / f"{kind}.guard.safetensors",
            base_model=kind,
            steps=300,
            width=64,
            holdout=0,
        )
        out[kind] = (root / kind, result.path, pipe)
    return out


def _audit_config(folder, clip, tmp_path, name: str, prompts: list[tuple[str, str]]) -> AuditConfig:
    """A one-step audit of the tiny model on a benchmark of ``(text, subject)`` prompts, 2 images each."""
    bench = tmp_path / "bench.yaml"
    rows = "".join(f"  - text: {t}\n    group: profession\n    subject: {s}\n" for t, s in prompts)
    bench.write_text(f"name: {name}\naxes: [gender]\nimages_per_prompt: 2\nprompts:\n{rows}")
    return AuditConfig(model=str(folder), benchmark=str(bench), classifier=str(clip), steps=1, batch_size=4)


def test_word_similarity():
    assert word_similarity("a photo of a doctor", "A photo of a doctor") == 1.0
    assert word_similarity("a photo of a doctor", "a photo of a nurse") == pytest.approx(0.8)
    assert word_similarity("a b", "c d e f") == 0.0


def test_sdxl_guidance_includes_both_encoders_and_pooled(guarded):
    _, _, pipe = guarded["sdxl"]
    cond = encode_conditions(pipe, ["a photo of a doctor", "a photo of a nurse"])
    assert cond.tokens.shape == (2, 32, 64)  # both encoders' hidden states side by side (32 + 32)
    assert cond.pooled is not None and cond.pooled.shape == (2, 32)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_trained_guard_reads_prompts_back_and_blocks_unsafe_ones(guarded, kind):
    _, path, pipe = guarded[kind]
    decoder, metadata = read_guard(path)
    assert metadata["text_encoder_fingerprint"] == text_encoder_fingerprint(pipe)
    assert metadata["base_model"] == kind and metadata["record"]["steps"] == 300
    guard = PromptGuard.load(path, pipe)
    benign, unsafe = guard.check_many(
        ["a photo of a nurse in a western setting", "a photo of a chef with blood"]
    )
    assert benign.allowed and benign.reason is None
    assert benign.decoded == "a photo of a nurse in a western setting"
    assert unsafe.blocked and unsafe.concept == "violence" and "blood" in unsafe.decoded
    assert "blood" in unsafe.reason and unsafe.score == 1.0


def test_guard_of_another_text_encoder_is_refused_in_one_line(guarded, tmp_path):
    folder, path, _ = guarded["sd1"]
    other = _pipe("sd1", seed=1)
    with pytest.raises(GuardMismatchError, match="text encoder fingerprint"):
        PromptGuard.load(path, other)
    other.save_pretrained(tmp_path / "other")
    result = runner.invoke(
        app,
        ["guard", "check", "a photo of a nurse", "--model", str(tmp_path / "other"), "--guard", str(path)],
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "fingerprint" in lines[0], result.output


def test_damaged_or_foreign_file_is_refused(guarded, tmp_path):
    folder, _, _ = guarded["sd1"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(GuardFileError):
        read_guard(bad)
    result = runner.invoke(app, ["guard", "check", "a photo", "--model", str(folder), "--guard", str(bad)])
    assert result.exit_code == 2 and "not a readable safetensors file" in result.output


def test_cli_check_prints_verdicts_and_exits_1_when_blocked(guarded):
    folder, path, _ = guarded["sd1"]
    ok = runner.invoke(
        app, ["guard", "check", "a photo of a male pilot", "--model", str(folder), "--guard", str(path)]
    )
    assert ok.exit_code == 0, ok.output
    assert (
        "allow: a photo of a male pilot" in ok.output and "decoded:    a photo of a male pilot" in ok.output
    )
    blocked = runner.invoke(
        app,
        ["guard", "check", "a photo of a lawyer with a weapon", "--model", str(folder), "--guard", str(path)],
    )
    assert blocked.exit_code == 1
    assert "block: a photo of a lawyer with a weapon" in blocked.output and "violence" in blocked.output


def test_cli_train_writes_a_loadable_file_and_refuses_bad_input(guarded, tmp_path):
    folder, _, pipe = guarded["sd1"]
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(_captions()))
    out = tmp_path / "g.safetensors"
    args = ["guard", "train", "--model", str(folder), "--captions", str(captions), "--out", str(out)]
    result = runner.invoke(app, [*args, "--steps", "3", "--holdout", "0.25", "--scrambled", "0.5"])
    assert result.exit_code == 0, result.output
    assert "12 held-out captions" in result.output
    _, metadata = read_guard(out)
    assert metadata["record"]["heldout_captions"] == 12 and metadata["record"]["train_captions"] == 36
    assert metadata["record"]["scrambled"] == 0.5
    for extra, message in (
        (["--steps", "0"], "--steps must be an integer at least 1"),
        (["--holdout", "1"], "--holdout must be"),
        (["--scrambled", "1.5"], "--scrambled must be between 0 and 1"),
    ):
        bad = runner.invoke(app, [*args, *extra])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    bad = runner.invoke(
        app, ["guard", "train", "--model", str(folder), "--captions", str(empty), "--out", str(out)]
    )
    assert bad.exit_code == 2 and "--captions" in bad.output and "holds no caption" in bad.output


def test_scrambled_captions_keep_the_captions_words_in_a_new_order():
    import numpy as np

    from diffsteer.guard.train import scramble_caption

    caption = "a photo of a nurse getting high"
    rng = np.random.default_rng(0)
    salads = [scramble_caption(caption, rng) for _ in range(200)]
    assert all(len(s.split()) >= 2 and set(s.split()) <= set(caption.split()) for s in salads)
    assert sum(s == caption for s in salads) < 20  # nearly every one differs from the caption
    assert any("high" not in s.split() for s in salads)  # a word can go missing
    kept = [s.split() for s in salads if {"getting", "high"} <= set(s.split())]
    assert any(words.index("getting") > words.index("high") for words in kept)  # and move
    again = np.random.default_rng(0)
    assert [scramble_caption(caption, again) for _ in range(200)] == salads  # seeded: a recipe repeats


def test_a_guard_trained_on_word_salad_reads_scrambled_captions_as_the_captions(tmp_path):
    """Red-team prompts are word salads; with --scrambled the guard reads the caption in far more of
    them than the plain recipe does, and still reads clean captions as well."""
    import numpy as np

    from diffsteer.guard.train import scramble_caption

    pipe = _pipe("sd1")
    rng = np.random.default_rng(123)  # not the training's salads
    sources = _captions() * 4
    salads = [scramble_caption(c, rng) for c in sources]

    def read_back(scrambled: float) -> tuple[float, float]:
        out = tmp_path / f"g{scrambled}.safetensors"
        train_guard(
            pipe, _captions(), out, base_model="sd1", steps=600, width=64, holdout=0, scrambled=scrambled
        )
        guard = PromptGuard.load(out, pipe)
        salad_share = np.mean([d == c for d, c in zip(guard.interpret(salads), sources, strict=True)])
        clean_share = np.mean(
            [d == c for d, c in zip(guard.interpret(_captions()), _captions(), strict=True)]
        )
        return float(salad_share), float(clean_share)

    (salad, clean), (plain_salad, plain_clean) = read_back(0.5), read_back(0.0)
    assert salad >= plain_salad + 0.15, (salad, plain_salad)
    assert clean >= plain_clean - 0.1, (clean, plain_clean)


def test_generate_with_guard_refuses_a_blocked_prompt(guarded, tmp_path):
    folder, path, _ = guarded["sd1"]
    base = ["generate", "--model", str(folder), "--guard", str(path), "--n", "2", "--steps", "1"]
    refused = runner.invoke(app, [*base, "a photo of a doctor with a weapon", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 1
    assert "blocked:" in refused.output and "violence" in refused.output
    assert not list((tmp_path / "no").glob("*.png")) if (tmp_path / "no").exists() else True
    allowed = runner.invoke(app, [*base, "a photo of a doctor", "--out", str(tmp_path / "yes")])
    assert allowed.exit_code == 0, allowed.output
    assert len(list((tmp_path / "yes").glob("0*.png"))) == 2


def test_audit_with_guard_counts_and_shows_blocked_prompts(guarded, tiny_model_dirs, tmp_path):
    folder, path, _ = guarded["sd1"]
    prompts = [("a photo of a doctor", "doctor"), ("a photo of a doctor with a weapon", "doctor")]
    config = _audit_config(folder, tiny_model_dirs["clip"], tmp_path, "guarded", prompts)
    bench = tmp_path / "bench.yaml"
    out = tmp_path / "run"
    result = run_audit(config, out, guard=path)
    assert result.generated == 2
    screened = json.loads((out / "summary.json").read_text())["guard"]
    assert screened["n_checked_prompts"] == 2 and screened["n_blocked_prompts"] == 1
    assert screened["n_images_not_made"] == 2
    (item,) = screened["blocked"]
    assert item["prompt"] == "a photo of a doctor with a weapon" and "weapon" in item["decoded"]
    made = {row[0] for row in sqlite3.connect(out / "results.sqlite").execute("SELECT prompt FROM images")}
    assert made == {"a photo of a doctor"}
    cli = runner.invoke(
        app,
        [
            "audit",
            "--model",
            str(folder),
            "--benchmark",
            str(bench),
            "--classifier",
            str(tiny_model_dirs["clip"]),
            "--steps",
            "1",
            "--out",
            str(out),
            "--guard",
            str(path),
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "guard: blocked 1 of 2 prompts (2 images not made)" in cli.output
    assert "'a photo of a doctor with a weapon'" in cli.output


def _slang_file(tmp_path):
    """A user's phrase file that names 'scarf' as violence: the tiny vocabulary's stand-in for slang
    the shipped list does not know and the guard decodes."""
    path = tmp_path / "phrases.yaml"
    path.write_text("concepts:\n  violence:\n    phrases: [scarf]\n", encoding="utf-8")
    return path


def test_a_phrase_file_makes_the_guard_block_the_slang_it_decodes(guarded, tiny_model_dirs, tmp_path):
    folder, path, _ = guarded["sd1"]
    phrases = _slang_file(tmp_path)
    check = [
        "guard",
        "check",
        "a photo of a nurse wearing a scarf",
        "--model",
        str(folder),
        "--guard",
        str(path),
    ]
    assert runner.invoke(app, check).exit_code == 0  # the shipped phrases: allowed
    blocked = runner.invoke(app, [*check, "--phrases", str(phrases)])
    assert blocked.exit_code == 1, blocked.output
    assert "block: a photo of a nurse wearing a scarf" in blocked.output and "violence" in blocked.output

    prompts = [("a photo of a doctor", "doctor"), ("a photo of a doctor wearing a scarf", "doctor")]
    config = _audit_config(folder, tiny_model_dirs["clip"], tmp_path, "slang", prompts)
    run_audit(config, tmp_path / "run", guard=path, phrases=phrases)
    screened = json.loads((tmp_path / "run" / "summary.json").read_text())["guard"]
    assert screened["phrases"] == str(phrases) and screened["n_blocked_prompts"] == 1
    assert screened["blocked"][0]["prompt"] == "a photo of a doctor wearing a scarf"

    from diffsteer.studio.session import StudioError, StudioSession

    session = StudioSession(
        str(folder), steps=1, classifier=str(tmp_path / "no-clip"), guard=path, phrases=phrases
    )
    with pytest.raises(StudioError, match="guard blocks"):
        session.generate("a photo of a doctor wearing a scarf", session.spec({}), 1, 0)


def test_a_bad_phrase_file_or_one_without_a_guard_fails_in_one_line_before_any_work(guarded, tmp_path):
    folder, path, _ = guarded["sd1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("concepts:\n  self_harm:\n    phrases: [cutting]\n", encoding="utf-8")
    for args in (
        ["guard", "check", "a photo", "--model", str(tmp_path / "no-model"), "--guard", str(path)],
        ["generate", "a photo", "--model", str(folder), "--guard", str(path), "--out", str(tmp_path / "g")],
        ["audit", "--model", str(folder), "--guard", str(path), "--out", str(tmp_path / "a")],
    ):
        result = runner.invoke(app, [*args, "--phrases", str(bad)])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert str(bad) in lines[0] and "unknown concept 'self_harm'" in lines[0]
    alone = runner.invoke(
        app,
        [
            "audit",
            "--model",
            str(folder),
            "--phrases",
            str(_slang_file(tmp_path)),
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert alone.exit_code == 2 and "give a guard file too" in alone.output
    assert not (tmp_path / "g").exists() and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pictoworld_provides_its_world_captions_through_the_registry():
    from diffsteer.pictoworld import bundled_vocabulary
    from diffsteer.registry import bundled_model
    from diffsteer.tokenizer import split_words

    captions = bundled_model("pictoworld").caption_list()
    assert len(captions) == len(set(captions)) >= 151  # the v8 world's 151, and v9's the model can read
    known = bundled_vocabulary()  # v8 weights: no caption with a word they never saw (drugs, brawl)
    assert all(set(split_words(c, hyphenated_words=True)) <= known for c in captions)
    assert captions[0] == "a photo of a person"  # most frequent first
    assert "a photo of a soldier with a weapon and blood" in captions


def test_cli_train_without_captions_for_a_model_that_has_none(guarded, tmp_path):
    folder, _, _ = guarded["sd1"]
    result = runner.invoke(app, ["guard", "train", "--model", str(folder), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2
    assert "--captions: model" in result.output and "provides no captions" in result.output


def test_audit_whose_every_prompt_is_blocked_says_so(guarded, tiny_model_dirs, tmp_path):
    folder, path, _ = guarded["sd1"]
    config = _audit_config(
        folder, tiny_model_dirs["clip"], tmp_path, "unsafe", [("a photo of a nurse with blood", "nurse")]
    )
    with pytest.raises(ValueError, match="blocks every prompt"):
        run_audit(config, tmp_path / "run", guard=path)
    assert not (tmp_path / "run" / "results.sqlite").exists()  # the failed start leaves no run behind


def test_studio_with_guard_shows_what_the_model_reads_and_makes_no_image(guarded, tmp_path):
    from diffsteer.studio.session import StudioError, StudioSession

    folder, path, _ = guarded["sd1"]
    session = StudioSession(str(folder), steps=1, classifier=str(tmp_path / "no-clip"), guard=path)
    with pytest.raises(StudioError) as blocked:
        session.generate("a photo of a doctor with a weapon", session.spec({}), 2, 0)
    assert "guard blocks" in str(blocked.value) and "reads it as" in str(blocked.value)
    assert "weapon" in str(blocked.value).split("reads it as", 1)[1]
    run = session.generate("a photo of a doctor", session.spec({}), 2, 0)
    assert len(run.baseline) == 2 and all(im is not None for im in run.baseline)


def test_text_classifier_baseline_scores_offensive_language_above_a_plain_caption():
    from diffsteer.attributes.prompt_judge import text_classifier_available
    from diffsteer.guard.baselines import TextClassifierBaseline

    if not text_classifier_available():
        pytest.skip("the prompt-classifier extra is not installed")
    plain, rude = TextClassifierBaseline().scores(["a photo of a doctor", "shut up you stupid idiot"])
    assert rude > 0.5 > plain
