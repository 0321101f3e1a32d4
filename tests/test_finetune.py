"""diffsteer finetune: DPOK and SFT train a LoRA that diffusers loads, resumes, and is refused on a
model it was not trained on; the audit and generate carry it per image."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.experiments.finetune import (
    FinetuneError,
    FinetuneRecipe,
    StochasticDDIM,
    finetune,
    normalised_advantages,
    parse_prompt,
    sample_trajectories,
)
from diffsteer.experiments.preview import generate_preview
from diffsteer.experiments.rewards import CallableReward, FairnessReward, TrainingPrompt
from diffsteer.generate import ImageRequest
from diffsteer.models import load_pipeline
from diffsteer.runs.executors import GeneratorSpec
from diffsteer.steering.lora import (
    CURVE_KEY,
    WEIGHT_NAME,
    AdapterMismatchError,
    load_adapter,
    require_peft,
)
from diffsteer.summary import Summary, load_summary
from diffsteer.testing import tiny_sd_pipeline

STEPS = 3
GUIDANCE = 2.0
PROMPTS = (TrainingPrompt("a photo of a cat"), TrainingPrompt("a photo of a dog"))
runner = CliRunner()


def brightness(images, prompts):
    """A toy reward the tiny random models can move: the mean pixel value."""
    return [float(np.asarray(im, dtype=np.float32).mean()) / 255 for im in images]


def darkness(images, prompts):
    return [-b for b in brightness(images, prompts)]


def _generator(pipe, batch_size=8):
    return GeneratorSpec(model="tiny", steps=STEPS, guidance=GUIDANCE, batch_size=batch_size).prepare(pipe)


def _recipe(model, **kw):
    base = dict(
        model=str(model),
        prompts=PROMPTS,
        iterations=2,
        prompts_per_iteration=2,
        images_per_prompt=2,
        steps=STEPS,
        guidance=GUIDANCE,
        learning_rate=1e-2,
        kl_coef=0.1,
        checkpoint_every=1,
    )
    base.update(kw)
    return FinetuneRecipe(**base)


def _train(model_dir, out, reward=brightness, **kw):
    pipe = load_pipeline(str(model_dir))
    recipe = _recipe(model_dir, **kw)
    return finetune(_generator(pipe), CallableReward("toy:reward", reward), recipe, out)


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs, tmp_path_factory):
    """{(kind, method): FinetuneResult} trained once for the module (two updates each)."""
    out = {}
    for kind in ("sd1", "sdxl"):
        for method in ("dpok", "sft"):
            folder = tmp_path_factory.mktemp(f"ft_{kind}_{method}")
            out[(kind, method)] = _train(tiny_model_dirs[kind], folder, method=method)
    return out


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("method", ["dpok", "sft"])
def test_adapter_loads_in_plain_diffusers_and_equals_diffsteer_generate(
    adapters, tiny_model_dirs, tmp_path, kind, method
):
    result = adapters[(kind, method)]
    meta, keys = _trained_adapter(result, tiny_model_dirs[kind], method)
    assert meta["lora_scope"] == "all"  # the default: every attention projection, self and cross
    assert any(".attn1.to_q." in k for k in keys) and any(".attn2.to_out.0." in k for k in keys)
    _loads_in_plain_diffusers_as_in_diffsteer(result, tiny_model_dirs[kind], tmp_path)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_cross_attention_adapter_changes_only_the_text_keys_and_values_and_loads_in_plain_diffusers(
    tiny_model_dirs, tmp_path, kind
):
    result = _train(tiny_model_dirs[kind], tmp_path / "run", method="sft", lora_scope="cross-attention")
    meta, keys = _trained_adapter(result, tiny_model_dirs[kind], "sft")
    assert meta["lora_scope"] == "cross-attention"
    assert json.loads(meta["recipe"])["lora_scope"] == "cross-attention"
    assert keys and all(".attn2.to_k.lora" in k or ".attn2.to_v.lora" in k for k in keys), keys
    assert any(".attn2.to_k." in k for k in keys) and any(".attn2.to_v." in k for k in keys)
    _loads_in_plain_diffusers_as_in_diffsteer(result, tiny_model_dirs[kind], tmp_path)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_text_encoder_adapter_trains_every_text_encoder_and_loads_in_plain_diffusers(
    tiny_model_dirs, tmp_path, kind
):
    """--train-text-encoder: the adapter also changes the text encoders' attention (both of SDXL's), its
    text-encoder tensors moved in training, and plain diffusers loads the whole of it."""
    result = _train(tiny_model_dirs[kind], tmp_path / "run", method="sft", text_encoder_lora=True)
    assert len(result.history) == 2 and result.history[-1]["kl"] > 0
    with safe_open(str(result.adapter / WEIGHT_NAME), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    assert json.loads(meta["text_encoder_lora"]) is True
    encoders = ["text_encoder", "text_encoder_2"] if kind == "sdxl" else ["text_encoder"]
    for name in encoders:
        ups = [v for k, v in tensors.items() if k.startswith(f"{name}.") and "lora" in k and "up" in k]
        assert ups and any(v.abs().max() > 0 for v in ups), name  # B starts at 0: training moved it
        config = json.loads(meta["lora_adapter_metadata"])
        assert sorted(config[f"{name}.target_modules"]) == ["k_proj", "out_proj", "q_proj", "v_proj"]
    assert any(k.startswith("unet.") for k in tensors)
    assert {k.split(".")[0] for k in tensors} == {"unet", *encoders}
    _loads_in_plain_diffusers_as_in_diffsteer(result, tiny_model_dirs[kind], tmp_path)


def test_text_encoder_adapter_changes_images_through_the_prompt_alone(tiny_model_dirs, tmp_path):
    """With the U-Net's part of a text-encoder adapter left out, plain diffusers still draws other
    images: the text encoders' part acts, and diffsteer's switch turns both parts off together."""
    from safetensors.torch import load_file, save_file

    model = tiny_model_dirs["sd1"]
    result = _train(model, tmp_path / "run", method="sft", text_encoder_lora=True, learning_rate=5e-2)
    path = result.adapter / WEIGHT_NAME
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    tensors = {k: v for k, v in load_file(str(path)).items() if k.startswith("text_encoder.")}
    save_file(tensors, str(text_only / WEIGHT_NAME), metadata=meta)

    def draw(pipe):
        return pipe(
            prompt=["a photo of a cat"], generator=[torch.Generator("cpu").manual_seed(3)],
            num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
        ).images  # fmt: skip

    plain = load_pipeline(str(model))
    plain.set_progress_bar_config(disable=True)
    base = draw(plain)
    plain.load_lora_weights(str(text_only))
    assert not np.allclose(draw(plain), base, atol=1e-4)
    from diffsteer.steering.lora import use_adapter

    use_adapter(plain, None)  # diffsteer's "no adapter": the text encoder's part is off too
    assert np.allclose(draw(plain), base, atol=1e-6)


def _trained_adapter(result, model_dir, method):
    """The adapter file's metadata and tensor names, after checking the two updates it had."""
    assert len(result.history) == 2
    assert all(math.isfinite(row["reward"]) and math.isfinite(row["kl"]) for row in result.history)
    assert result.history[-1]["kl"] > 0  # after one update the adapter is away from the frozen model
    path = result.adapter / WEIGHT_NAME
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        keys = list(handle.keys())
    assert meta["method"] == method and json.loads(meta["recipe"])["kl_coef"] == 0.1
    assert meta["base_model"] == str(model_dir) and meta["fingerprint"]
    assert all(k.startswith("unet.") and "lora" in k for k in keys)
    return meta, keys


def _loads_in_plain_diffusers_as_in_diffsteer(result, model_dir, tmp_path):
    """Plain diffusers' load_lora_weights changes the images; diffsteer's generate --lora gives the same."""
    kind_dir = str(model_dir)
    prompt, seeds = "a photo of a cat", [5, 6]
    plain = load_pipeline(kind_dir)
    plain.set_progress_bar_config(disable=True)
    base = plain(
        prompt=[prompt] * 2,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="np",
    ).images
    plain.load_lora_weights(str(result.adapter))  # diffusers alone, no diffsteer code involved
    tuned = plain(
        prompt=[prompt] * 2,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="np",
    ).images
    tuned = (tuned * 255).round().astype(np.int16)
    assert not np.array_equal(tuned, (base * 255).round().astype(np.int16))  # the adapter does something

    paths = generate_preview(
        prompt,
        tmp_path / "look",
        model=kind_dir,
        n=2,
        seed=5,
        steps=STEPS,
        guidance=GUIDANCE,
        lora=result.adapter,
    )
    from PIL import Image

    ours = np.stack([_pixels(Image.open(p)) for p in paths[:-1]])
    assert np.abs(ours - tuned).max() <= 1  # the same images, to a rounding of the last pixel level


def test_dpok_moves_a_toy_reward_in_the_direction_asked(tmp_path):
    """Brightness up when rewarded for brightness, down when rewarded for darkness, on held-out seeds."""
    held = [ImageRequest("a photo of a cat", seed=10_000 + i) for i in range(16)]
    for reward in (brightness, darkness):
        pipe = tiny_sd_pipeline("sd1")
        gen = _generator(pipe, batch_size=16)
        before = np.mean(reward([r.image for r in gen.generate(held)], None))
        recipe = _recipe(
            "tiny", iterations=10, images_per_prompt=8, learning_rate=3e-2, kl_coef=0.0, checkpoint_every=10
        )
        finetune(gen, CallableReward("toy:reward", reward), recipe, tmp_path / reward.__name__)
        after = np.mean(reward([r.image for r in gen.generate(held)], None))
        assert after > before, reward.__name__


def test_per_step_likelihood_matches_the_sampled_noise():
    """x_{t-1} minus the policy's mean, over sigma_t, is standard normal: the log-likelihood DPOK uses."""
    pipe = tiny_sd_pipeline("sd1")
    gen = _generator(pipe)
    sampler = StochasticDDIM(pipe.scheduler.config, STEPS, eta=1.0)
    prompts = [PROMPTS[0]] * 8
    batch = sample_trajectories(gen, sampler, prompts, seeds=list(range(8)))
    from diffsteer.experiments.finetune import _unet_output

    residuals = []
    with torch.no_grad():
        for index, t in enumerate(batch.timesteps):
            if sampler.sigma(index) == 0:
                continue
            x = batch.latents[index]
            out = _unet_output(pipe.unet, x, t, batch.conditioning, GUIDANCE, guided=True)
            mean = sampler.mean(index, x, out)
            residuals.append(((batch.latents[index + 1] - mean) / sampler.sigma(index)).flatten())
    z = torch.cat(residuals)
    assert z.numel() > 500
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1


def test_one_dpok_update_raises_the_advantage_weighted_likelihood_of_its_batch():
    """The policy-gradient step climbs sum_i A_i log p(trajectory_i): rewarded trajectories get likelier."""
    from diffsteer.experiments.finetune import _unet_output, step_losses
    from diffsteer.steering.lora import add_lora, lora_parameters

    pipe = tiny_sd_pipeline("sd1")
    gen = _generator(pipe)
    torch.manual_seed(0)
    add_lora(pipe.unet, rank=4)
    params = lora_parameters(pipe.unet)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    sampler = StochasticDDIM(pipe.scheduler.config, STEPS, eta=1.0)
    prompts = [PROMPTS[0]] * 8
    batch = sample_trajectories(gen, sampler, prompts, seeds=list(range(8)))
    advantages = normalised_advantages(torch.randn(8, generator=torch.Generator().manual_seed(1)), prompts)

    def objective():
        total = 0.0
        with torch.no_grad():
            for index, t in enumerate(batch.timesteps):
                sigma = sampler.sigma(index)
                if sigma == 0:
                    continue
                x = batch.latents[index]
                out = _unet_output(pipe.unet, x, t, batch.conditioning, GUIDANCE, guided=True)
                mean = sampler.mean(index, x, out)
                log_p = -((batch.latents[index + 1] - mean) ** 2).sum(dim=(1, 2, 3)) / (2 * sigma**2)
                total += float((advantages * log_p).mean())
        return total

    recipe = _recipe("tiny", kl_coef=0.0)
    before = objective()
    optimizer.zero_grad()
    step_losses(gen, sampler, batch, advantages, recipe, iteration_seed=0)
    optimizer.step()
    assert objective() > before


def test_fairness_reward_is_distribution_matching_per_prompt():
    class Fixed:
        """A judge that gives each image the 'woman' probability it was told."""

        def __init__(self, p):
            self.p = p

        def classify(self, images, axes, person_filter=True):
            from diffsteer.attributes import AxisLabel, ImageLabels

            return [
                ImageLabels(True, 1.0, {"gender": AxisLabel("woman", {"man": 1 - q, "woman": q})})
                for q in self.p
            ]

    from diffsteer.attributes import get_axis

    p = [0.9, 0.8, 0.9, 0.2, 0.5, 0.5]
    prompts = [PROMPTS[0]] * 4 + [PROMPTS[1]] * 2
    reward = FairnessReward(Fixed(p), get_axis("gender"))
    r = reward([None] * 6, prompts)
    s = np.mean(p[:4])
    kl = s * math.log(s / 0.5) + (1 - s) * math.log((1 - s) / 0.5)
    assert float(r[:4].mean()) == pytest.approx(-kl, abs=1e-5)  # expectation: -KL(shares || target)
    assert float(r[4:].mean()) == pytest.approx(0.0, abs=1e-6)  # a balanced prompt is at the optimum
    assert float(r[3]) > float(r[0])  # the minority image of a skewed prompt is worth more
    adv = normalised_advantages(r, prompts)
    assert float(adv[:4].mean()) == pytest.approx(0, abs=1e-5)


def test_safety_reward_trains_on_a_tiny_pipeline(tiny_model_dirs, tmp_path):
    """The safety reward is minus the judge's unsafe probability, and a fine-tune runs on it (tested on
    tiny pipelines only: pictoworld draws almost no violence at its guidance; docs/finetune.md)."""
    from diffsteer.attributes import ClipZeroShotClassifier, get_axis
    from diffsteer.experiments.rewards import build_reward

    judge = ClipZeroShotClassifier.from_pretrained(str(tiny_model_dirs["clip"]))
    reward = build_reward("safety", judge, concept="violence")
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        prompt=["a photo of a cat"] * 3,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (1, 2, 3)],
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
    ).images
    axis = get_axis(reward.axis.name)
    probs = [
        item.axes[axis.name].probs[reward.unsafe_class]
        for item in judge.classify(images, [axis], person_filter=False)
    ]
    assert reward(images, [PROMPTS[0]] * 3).tolist() == pytest.approx([-p for p in probs])
    assert all(-1.0 <= -p <= 0.0 for p in probs)

    result = finetune(
        _generator(pipe), reward, _recipe(tiny_model_dirs["sd1"], reward=reward.describe()), tmp_path
    )
    assert len(result.history) == 2 and all(-1.0 <= row["reward"] <= 0.0 for row in result.history)
    with safe_open(str(result.adapter / WEIGHT_NAME), framework="pt") as handle:
        assert json.loads(handle.metadata()["reward"])["unsafe_class"] == reward.unsafe_class


def test_adapter_for_another_model_is_refused_in_one_line(adapters, tiny_model_dirs, tmp_path):
    adapter = adapters[("sd1", "dpok")].adapter
    retrained = tiny_sd_pipeline("sd1", seed=1)  # same architecture, other weights
    with pytest.raises(AdapterMismatchError, match="other weights"):
        load_adapter(retrained, adapter)
    with pytest.raises(AdapterMismatchError, match="U-Net fingerprint"):
        load_adapter(tiny_sd_pipeline("sd2"), adapter)
    done = runner.invoke(
        app,
        ["generate", "a photo", "--model", str(tiny_model_dirs["sdxl"]), "--n", "1", "--steps", "2",
         "--lora", str(adapter), "--out", str(tmp_path / "g")],
    )  # fmt: skip
    assert done.exit_code == 2
    lines = [ln for ln in done.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "U-Net fingerprint" in lines[0]


def test_audit_compares_the_adapter_with_the_base_model_on_the_same_seeds(
    adapters, tiny_model_dirs, write_benchmark, tmp_path
):
    adapter = adapters[("sd1", "dpok")].adapter
    bench = write_benchmark(images_per_prompt=3)
    base = dict(
        model=str(tiny_model_dirs["sd1"]), benchmark=str(bench), classifier=str(tiny_model_dirs["clip"])
    )
    base.update(steps=2, batch_size=4)
    alone = run_audit(AuditConfig(**base, mitigations=("none",)), tmp_path / "alone")
    both = run_audit(AuditConfig(**base, mitigations=("none", f"lora:{adapter}")), tmp_path / "both")
    assert alone.generated == 6 and both.generated == 12
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert {r["mitigation"] for r in summary["results"]} == {"none", f"lora:{adapter}"}

    import sqlite3

    def pngs(run, mitigation):
        rows = sqlite3.connect(run / "results.sqlite").execute(
            "SELECT seed, prompt_id, png FROM images WHERE mitigation = ? ORDER BY prompt_id, seed",
            (mitigation,),
        )
        return [row for row in rows]

    # loading an adapter leaves the base model's images untouched, byte for byte
    assert pngs(tmp_path / "alone", "none") == pngs(tmp_path / "both", "none")
    assert pngs(tmp_path / "both", "none") != pngs(tmp_path / "both", f"lora:{adapter}")


def _without_curve(adapter, folder):
    """A copy of ``adapter`` as saved before adapters carried their training curve."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True)
    with safe_open(str(adapter / WEIGHT_NAME), framework="pt") as handle:
        meta = dict(handle.metadata())
    assert json.loads(meta.pop(CURVE_KEY))  # a new adapter has one; the copy drops it
    save_file(load_file(str(adapter / WEIGHT_NAME)), str(folder / WEIGHT_NAME), metadata=meta)
    return folder


def test_finetune_records_its_reward_kl_curve_in_the_adapter_and_draws_it(adapters):
    for result in adapters.values():
        with safe_open(str(result.adapter / WEIGHT_NAME), framework="pt") as handle:
            curve = json.loads(handle.metadata()[CURVE_KEY])
        assert [(u["iteration"], u["reward"], u["kl"]) for u in curve] == [
            (h["iteration"], pytest.approx(h["reward"], abs=1e-6), pytest.approx(h["kl"], abs=1e-6))
            for h in result.history
        ]
        assert result.curve == result.out_dir / "curve.svg" and result.curve.read_text().startswith("<svg")


def test_audit_report_charts_each_adapters_reward_against_kl(
    adapters, tiny_model_dirs, write_benchmark, tmp_path
):
    dpok, sft = adapters[("sd1", "dpok")], adapters[("sd1", "sft")]
    # an adapter saved before adapters carried their curve: read from its run folder's history.json
    # when that run made it, else shown without a curve
    moved = _without_curve(sft.adapter, tmp_path / "old_run" / "adapter")
    (tmp_path / "old_run" / "history.json").write_text((sft.out_dir / "history.json").read_text())
    (tmp_path / "old_run" / "recipe.json").write_text((sft.out_dir / "recipe.json").read_text())
    bare = _without_curve(dpok.adapter, tmp_path / "bare")
    mitigations = ("none", f"lora:{dpok.adapter}", f"lora:{sft.adapter}", f"lora:{moved}", f"lora:{bare}")
    config = AuditConfig(
        model=str(tiny_model_dirs["sd1"]),
        benchmark=str(write_benchmark(images_per_prompt=2)),
        classifier=str(tiny_model_dirs["clip"]),
        steps=2,
        batch_size=4,
        mitigations=mitigations,
    )
    result = run_audit(config, tmp_path / "audit")

    text = (tmp_path / "audit" / "summary.json").read_text()
    assert Summary.from_json(text).to_json() == text  # the new section reads and writes back unchanged
    section = load_summary(tmp_path / "audit").finetune
    assert section is not None
    curves = {c.mitigation: c for c in section.adapters}
    assert list(curves) == list(mitigations[1:])
    for name, trained in ((mitigations[1], dpok), (mitigations[2], sft), (mitigations[3], sft)):
        curve = curves[name]
        assert curve.method == json.loads((trained.out_dir / "recipe.json").read_text())["method"]
        assert [u["kl"] for u in curve.updates] == pytest.approx([h["kl"] for h in trained.history], abs=1e-6)
        assert curve.end_kl == pytest.approx(trained.history[-1]["kl"], abs=1e-6)  # update 1 has KL 0
        assert curve.lora_scope == "all"  # the recipe's scope, shown in the report's table
    assert "history.json" in curves[mitigations[3]].source
    assert curves[mitigations[4]].updates == [] and "no training history" in curves[mitigations[4]].note

    page = result.report.read_text()
    assert "id=finetune" in page and "Fine-tunes: training reward against KL" in page
    chart = page[page.index("id=finetune") :]
    chart = chart[chart.index("<svg") : chart.index("</svg>")]
    # the chart's legend names the three adapters that have a curve (by run folder), not the bare one
    assert chart.count("DPOK, kl 0.1") == 1 and chart.count("SFT, kl 0.1") == 2
    assert "bare" not in chart

    without = run_audit(dataclasses.replace(config, mitigations=("none",)), tmp_path / "plain")
    assert "id=finetune" not in without.report.read_text()
    assert "finetune" not in json.loads((tmp_path / "plain" / "summary.json").read_text())


def _cut_and_resumed(model, tmp_path, **kw):
    """A 3-update run killed after 2 updates, then resumed; checks it ends where an uninterrupted run
    ends (history and every adapter tensor), and returns the key names of its adapter."""

    class Stop(Exception):
        pass

    def stop_after_two(done, total, row):
        if done == 2:
            raise Stop

    whole = _train(model, tmp_path / "whole", iterations=3, **kw)
    pipe = load_pipeline(str(model))
    reward = CallableReward("toy:reward", brightness)
    with pytest.raises(Stop):
        finetune(_generator(pipe), reward, _recipe(model, iterations=3, **kw), tmp_path / "cut",
                 progress=stop_after_two)  # fmt: skip
    assert not (tmp_path / "cut" / "adapter").exists()
    resumed = _train(model, tmp_path / "cut", iterations=3, **kw)
    assert [r["reward"] for r in resumed.history] == pytest.approx([r["reward"] for r in whole.history])
    with (
        safe_open(str(whole.adapter / WEIGHT_NAME), "pt") as a,
        safe_open(str(resumed.adapter / WEIGHT_NAME), "pt") as b,
    ):
        for key in a.keys():
            assert torch.allclose(a.get_tensor(key), b.get_tensor(key), atol=1e-6), key
        return list(a.keys())


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_model_dirs, tmp_path):
    model = tiny_model_dirs["sd1"]
    _cut_and_resumed(model, tmp_path)
    with pytest.raises(FinetuneError, match="another recipe"):
        _train(model, tmp_path / "cut", iterations=3, kl_coef=0.5)
    with pytest.raises(FinetuneError, match="lora_scope"):
        _train(model, tmp_path / "cut", iterations=3, lora_scope="cross-attention")


def test_interrupted_text_encoder_run_resumes_to_the_uninterrupted_result(tiny_model_dirs, tmp_path):
    """The checkpoint carries the text encoders' adapter and its optimizer state too."""
    model = tiny_model_dirs["sdxl"]
    keys = _cut_and_resumed(model, tmp_path, text_encoder_lora=True)
    assert any(k.startswith("text_encoder_2.") for k in keys)
    with pytest.raises(FinetuneError, match="text_encoder_lora"):
        _train(model, tmp_path / "cut", iterations=3)


def test_run_folder_from_before_the_lora_scope_option_still_resumes(tiny_model_dirs, tmp_path):
    """A recipe.json written before --lora-scope existed (no such key) is the default scope's recipe."""
    model = tiny_model_dirs["sd1"]
    first = _train(model, tmp_path / "run", iterations=2)
    recipe_file = tmp_path / "run" / "recipe.json"
    old = json.loads(recipe_file.read_text())
    for added in ("lora_scope", "shared_seeds", "text_encoder_lora", "preserve_prompts"):
        del old[added]  # no such options then
    recipe_file.write_text(json.dumps(old))
    again = _train(model, tmp_path / "run", iterations=2)  # resumes from its checkpoint: no new update
    assert again.history == first.history
    with pytest.raises(FinetuneError, match="lora_scope"):
        _train(model, tmp_path / "run", iterations=2, lora_scope="cross-attention")


def test_shared_seeds_start_every_prompt_of_an_update_from_the_same_noise(tiny_model_dirs, tmp_path):
    """Two prompts of one text that ask for different classes: with --shared-seeds image j of each is
    drawn from the same noise, so the pair differs only where the prompt (here: nothing) decides."""
    model = tiny_model_dirs["sd1"]
    pair = (TrainingPrompt("a photo of a cat", {"culture": "western"}),
            TrainingPrompt("a photo of a cat", {"culture": "non-western"}))  # fmt: skip
    for shared in (True, False):
        seen: list = []

        def record(images, prompts, seen=seen):
            seen.append([_pixels(im) for im in images])
            return brightness(images, prompts)

        _train(model, tmp_path / str(shared), reward=record, prompts=pair, iterations=1, shared_seeds=shared)
        (images,) = seen  # one update: [cat/western x 2, cat/non-western x 2]
        same = [np.array_equal(images[j], images[2 + j]) for j in range(2)]
        assert same == [shared, shared]
        assert not np.array_equal(images[0], images[1])  # the images of one prompt still differ


def test_bad_recipes_and_prompts_fail_in_one_line_naming_the_parameter():
    with pytest.raises(FinetuneError, match="images_per_prompt"):
        _recipe("m", images_per_prompt=1).check()
    with pytest.raises(FinetuneError, match="method"):
        _recipe("m", method="ppo").check()
    with pytest.raises(FinetuneError, match="eta"):
        _recipe("m", eta=0.0).check()
    with pytest.raises(FinetuneError, match="lora_scope 'text'.*all or cross-attention"):
        _recipe("m", lora_scope="text").check()
    assert parse_prompt("a photo of a nurse::culture=non-western").attributes == {"culture": "non-western"}
    with pytest.raises(FinetuneError, match="--prompt"):
        parse_prompt("a photo::culture")


def test_missing_peft_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"diffsteer\[finetune\]"):
        require_peft()
    done = runner.invoke(app, ["finetune", "--prompt", "a photo", "--out", str(tmp_path / "f")])
    assert done.exit_code == 2 and "diffsteer[finetune]" in done.output


def test_finetune_command_says_where_its_curve_is(tiny_model_dirs, tmp_path):
    out = tmp_path / "run"
    done = runner.invoke(
        app,
        ["finetune", "--model", str(tiny_model_dirs["sd1"]), "--classifier", str(tiny_model_dirs["clip"]),
         "--prompt", "a photo of a cat", "--reward", "test_finetune:brightness", "--iterations", "2",
         "--prompts-per-iteration", "1", "--images-per-prompt", "2", "--steps", str(STEPS),
         "--guidance", str(GUIDANCE), "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    line = next(ln for ln in done.output.splitlines() if ln.startswith("training curve"))
    assert line.endswith(str(out / "curve.svg")) and (out / "curve.svg").read_text().startswith("<svg")


def test_finetune_command_takes_the_lora_scope(tiny_model_dirs, tmp_path):
    args = ["finetune", "--model", str(tiny_model_dirs["sd1"]), "--classifier", str(tiny_model_dirs["clip"]),
            "--prompt", "a photo of a cat", "--reward", "test_finetune:brightness", "--iterations", "1",
            "--prompts-per-iteration", "1", "--images-per-prompt", "2", "--steps", str(STEPS),
            "--guidance", str(GUIDANCE)]  # fmt: skip
    bad = runner.invoke(app, [*args, "--lora-scope", "text", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "lora_scope 'text'" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad" / "recipe.json").exists()
    out = tmp_path / "run"
    done = runner.invoke(app, [*args, "--lora-scope", "cross-attention", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "recipe.json").read_text())["lora_scope"] == "cross-attention"
    with safe_open(str(out / "adapter" / WEIGHT_NAME), "pt") as handle:
        assert all(".attn2.to_k." in k or ".attn2.to_v." in k for k in handle.keys())


def test_finetune_command_takes_the_sft_temperature(tiny_model_dirs, tmp_path):
    args = ["finetune", "--model", str(tiny_model_dirs["sd1"]), "--classifier", str(tiny_model_dirs["clip"]),
            "--prompt", "a photo of a cat", "--reward", "test_finetune:brightness", "--method", "sft",
            "--iterations", "1", "--prompts-per-iteration", "1", "--images-per-prompt", "2",
            "--steps", str(STEPS), "--guidance", str(GUIDANCE)]  # fmt: skip
    bad = runner.invoke(app, [*args, "--sft-temperature", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "sft_temperature" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    out = tmp_path / "run"
    done = runner.invoke(app, [*args, "--sft-temperature", "0.25", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "recipe.json").read_text())["sft_temperature"] == 0.25


def test_a_run_folder_another_process_trains_is_refused_in_one_line(tmp_path):
    from diffsteer.runs.store import RunFolderLock

    out = tmp_path / "run"
    out.mkdir()
    with RunFolderLock(out):  # as another fine-tune holds it (flock is per open file, so this conflicts)
        done = runner.invoke(app, ["finetune", "--prompt", "a photo of a doctor", "--out", str(out)])
    assert done.exit_code == 2 and "in use by another diffsteer process" in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1 and "Traceback" not in done.output


def test_train_text_encoder_is_recorded_and_refused_in_one_line_where_transformers_would_refuse(
    tiny_model_dirs, tmp_path, monkeypatch
):
    """transformers' PEFT integration refuses a peft older than it names; the command says so before any
    model loads, and an audit naming such an adapter fails the same way before its first image."""
    import transformers.integrations.peft as integration

    args = ["finetune", "--model", str(tiny_model_dirs["sd1"]), "--classifier", str(tiny_model_dirs["clip"]),
            "--prompt", "a photo of a cat", "--reward", "test_finetune:brightness", "--method", "sft",
            "--iterations", "1", "--prompts-per-iteration", "1", "--images-per-prompt", "2",
            "--steps", str(STEPS), "--guidance", str(GUIDANCE), "--train-text-encoder"]  # fmt: skip
    out = tmp_path / "run"
    done = runner.invoke(app, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "recipe.json").read_text())["text_encoder_lora"] is True

    monkeypatch.setattr(integration, "MIN_PEFT_VERSION", "99.0")
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad")])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "peft >= 99.0" in lines[0], bad.output
    assert not (tmp_path / "bad" / "recipe.json").exists()
    audit = runner.invoke(app, ["audit", "--model", str(tiny_model_dirs["sd1"]), "--classifier",
                                str(tiny_model_dirs["clip"]), "--mitigation", f"lora:{out / 'adapter'}",
                                "--out", str(tmp_path / "audit")])  # fmt: skip
    assert audit.exit_code == 2 and "peft >= 99.0" in audit.output, audit.output


def test_preserved_prompts_are_sampled_each_update_with_no_reward_and_advantage_zero(
    tiny_model_dirs, tmp_path, monkeypatch
):
    """--preserve-prompt: every update samples the preserved prompts beside the trained ones (a quarter
    as many, cycling), the reward never sees their images, and their advantage is 0, so SFT trains them
    toward the model's own samples and the KL holds them; the trained prompts keep their seeds."""
    import diffsteer.experiments.finetune as ft

    model = tiny_model_dirs["sd1"]
    seen_by_reward: list[str] = []
    sampled: list[list[str]] = []
    advantages: list[torch.Tensor] = []
    seeds_of: list[list[int]] = []
    real_sample, real_losses = ft.sample_trajectories, ft.step_losses

    def sample(generator, sampler, prompts, seeds):
        sampled.append([p.text for p in prompts])
        seeds_of.append(list(seeds))
        return real_sample(generator, sampler, prompts, seeds)

    def losses(generator, sampler, batch, adv, recipe, seed):
        advantages.append(adv.clone())
        return real_losses(generator, sampler, batch, adv, recipe, seed)

    def record(images, prompts):
        seen_by_reward.extend(getattr(p, "text", p) for p in prompts)
        return brightness(images, prompts)

    monkeypatch.setattr(ft, "sample_trajectories", sample)
    monkeypatch.setattr(ft, "step_losses", losses)
    keep = ("a photo of a dog", "a photo of a bird")
    _train(model, tmp_path / "kept", reward=record, method="sft", prompts_per_iteration=4,
           preserve_prompts=keep, prompts=PROMPTS, iterations=2)  # fmt: skip
    # 4 trained prompts a quarter of which is 1 preserved prompt per update, cycling, 2 images each
    assert sampled[0][8:] == [keep[0]] * 2 and sampled[1][8:] == [keep[1]] * 2
    assert set(seen_by_reward) == {p.text for p in PROMPTS}
    for adv in advantages:
        assert torch.all(adv[8:] == 0) and adv[:8].abs().sum() > 0
    assert json.loads((tmp_path / "kept" / "recipe.json").read_text())["preserve_prompts"] == list(keep)
    kept_first = seeds_of[0]
    seeds_of.clear()
    _train(model, tmp_path / "plain", method="sft", prompts_per_iteration=4, prompts=PROMPTS, iterations=1)
    assert seeds_of[0] == kept_first[:8]  # the trained prompts' images are those of a run without
