"""SteeredGenerator on tiny random SD 1.x / SD 2.x (v-prediction) / SDXL pipelines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffsteer.generate import GeneratedImage, ImageRequest, SteeredGenerator
from diffsteer.testing import tiny_pipeline_without_mid_block, tiny_sd_pipeline

PROMPT = "a photo of a doctor"
STEPS = 2


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    built = {kind: tiny_sd_pipeline(kind) for kind in ("sd1", "sd2", "sdxl")}
    for pipe in built.values():
        pipe.set_progress_bar_config(disable=True)
    return built


@pytest.fixture(scope="module")
def no_mid_pipe(pipes: dict[str, Any]) -> StableDiffusionPipeline:
    return tiny_pipeline_without_mid_block(pipes["sd1"])


def pixels(result: GeneratedImage) -> np.ndarray:
    assert result.image is not None
    return np.asarray(result.image).astype(np.int16)


@contextmanager
def hooked(module: torch.nn.Module, fn: Callable[..., Any], *, pre: bool = False) -> Iterator[None]:
    handle = (
        module.register_forward_pre_hook(fn, with_kwargs=True) if pre else module.register_forward_hook(fn)
    )
    try:
        yield
    finally:
        handle.remove()


def bottleneck_delta(pipe: Any, gen: SteeredGenerator, requests: list[ImageRequest]) -> torch.Tensor:
    """What the steering hook added at the first step: up_blocks[0] input minus the raw block output."""
    raw: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []

    def grab_raw(_m: Any, _a: Any, out: Any) -> None:
        raw.append((out[0] if isinstance(out, tuple) else out).clone())

    def grab_seen(_m: Any, _a: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["hidden_states"].clone())

    # the probe is registered before generate() registers its hook, so it sees the unsteered output
    with (
        hooked(pipe.unet.get_submodule(gen.steered_block), grab_raw),
        hooked(pipe.unet.up_blocks[0], grab_seen, pre=True),
    ):
        gen.generate(requests)
    return seen[0] - raw[0]


# ----------------------------------------------------------------------------------- plumbing
def test_shapes_and_defaults(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=STEPS)
    assert (gen.height, gen.width) == (32, 32)
    assert gen.latent_shape == (4, 16, 16)
    assert gen.steered_block == "mid_block"
    assert gen.hspace_shape == (32, 8, 8)
    assert SteeredGenerator(pipes["sdxl"]).prompt_embeds_shape == (32, 64)
    assert SteeredGenerator(pipes["sd1"], height=64, width=48).latent_shape == (4, 32, 24)
    assert SteeredGenerator(pipes["sd1"], height=64, width=48).hspace_shape == (32, 16, 12)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_same_request_twice_is_identical_and_matches_plain_diffusers(
    pipes: dict[str, Any], kind: str
) -> None:
    pipe = pipes[kind]
    gen = SteeredGenerator(pipe, steps=STEPS, guidance=6.0)
    requests = [ImageRequest(PROMPT, seed=3), ImageRequest("a photo of a nurse", seed=4)]
    first, second = gen.generate(requests), gen.generate(requests)
    for a, b in zip(first, second, strict=True):
        assert a.drop_reason is None and not a.truncated
        assert a.image is not None and a.image.mode == "RGB" and a.image.size == (32, 32)
        assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))
    # without steering the output is exactly what diffusers gives for the same per-image generators
    plain = pipe(
        prompt=[r.prompt for r in requests],
        generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
        num_inference_steps=STEPS,
        guidance_scale=6.0,
        output_type="np",
    ).images
    ours = np.stack([pixels(r) for r in first])
    assert np.array_equal((plain * 255).round().astype(np.int16), ours)


def test_initial_noise_is_paired_across_steering(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    gen = SteeredGenerator(pipe, steps=STEPS)
    noise = gen.initial_noise(7)
    assert noise.shape == gen.latent_shape and noise.dtype == torch.float32
    assert torch.equal(noise, SteeredGenerator(pipe, steps=5, guidance=2.0).initial_noise(7))
    assert not torch.equal(noise, gen.initial_noise(8))

    starts: list[torch.Tensor] = []

    def first_input(_m: Any, args: Any, _k: Any) -> None:
        starts.append(args[0].clone())

    steered = ImageRequest(
        PROMPT,
        seed=7,
        hspace=torch.randn(gen.hspace_shape),
        prompt_embeds_offset=torch.randn(gen.prompt_embeds_shape[1]),
    )
    with hooked(pipe.unet, first_input, pre=True):
        gen.generate([ImageRequest(PROMPT, seed=7)])
        n = len(starts)
        gen.generate([steered])
    assert torch.equal(starts[0], starts[n])  # same starting latents with and without mitigation
    sigma = float(pipe.scheduler.init_noise_sigma)
    assert torch.allclose(starts[0][1], noise * sigma)  # conditional copy of the unit noise


def test_batches_are_split_and_results_keep_request_order(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    requests = [ImageRequest(PROMPT, seed=s) for s in range(3)]
    batch_sizes: list[int] = []
    steps_seen: list[int] = []

    def count(_m: Any, args: Any, _k: Any) -> None:
        batch_sizes.append(args[0].shape[0])

    with hooked(pipe.unet, count, pre=True):
        results = SteeredGenerator(pipe, steps=STEPS, batch_size=2).generate(
            requests, on_step=steps_seen.append
        )
    assert [r.request for r in results] == requests
    assert batch_sizes == [4, 4, 2, 2]  # two pipeline calls; CFG doubles the U-Net batch
    assert steps_seen == [0, 1, 0, 1]


def test_batch_composition_changes_pixels_by_at_most_rounding(pipes: dict[str, Any]) -> None:
    # CPU kernels pick different blockings for different batch sizes, so an image generated alone and
    # inside a batch of three agree to float tolerance (~1e-5 in latents), not bit for bit.
    gen = SteeredGenerator(pipes["sd2"], steps=STEPS)
    requests = [ImageRequest(PROMPT, seed=s) for s in range(3)]
    together = gen.generate(requests, record_steps=[STEPS - 1])
    alone = gen.generate(requests[1:2], record_steps=[STEPS - 1])[0]
    assert torch.allclose(alone.latents[STEPS - 1], together[1].latents[STEPS - 1], atol=1e-3)
    assert np.abs(pixels(alone) - pixels(together[1])).max() <= 2


# ----------------------------------------------------------------------------------- h-space
@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_hspace_reaches_only_the_conditional_half(pipes: dict[str, Any], kind: str) -> None:
    gen = SteeredGenerator(pipes[kind], steps=1)
    vector = torch.randn(gen.hspace_shape)
    delta = bottleneck_delta(
        pipes[kind], gen, [ImageRequest(PROMPT, 0, hspace=vector), ImageRequest(PROMPT, 1)]
    )
    assert delta.shape == (4, *gen.hspace_shape)
    assert torch.count_nonzero(delta[:2]) == 0  # unconditional half untouched
    assert torch.allclose(delta[2], vector, atol=1e-5)
    assert torch.count_nonzero(delta[3]) == 0  # the unsteered image of the same batch


def test_hspace_on_both_branches_steers_the_unconditional_pass_too(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=1, hspace_branches="both")
    vector = torch.randn(gen.hspace_shape)
    delta = bottleneck_delta(
        pipes["sd1"], gen, [ImageRequest(PROMPT, 0, hspace=vector), ImageRequest(PROMPT, 1)]
    )
    assert torch.allclose(delta[0], vector, atol=1e-5) and torch.allclose(delta[2], vector, atol=1e-5)
    assert torch.count_nonzero(delta[1]) == 0 and torch.count_nonzero(delta[3]) == 0
    with pytest.raises(ValueError, match="conditional or both"):
        SteeredGenerator(pipes["sd1"], hspace_branches="unconditional")


def test_hspace_without_guidance_steers_the_only_pass(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=1, guidance=1.0)
    vector = torch.randn(gen.hspace_shape)
    delta = bottleneck_delta(
        pipes["sd1"], gen, [ImageRequest(PROMPT, 0), ImageRequest(PROMPT, 1, hspace=vector)]
    )
    assert delta.shape == (2, *gen.hspace_shape)
    assert torch.count_nonzero(delta[0]) == 0
    assert torch.allclose(delta[1], vector, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_hspace_zero_is_a_no_op_and_large_changes_only_its_image(pipes: dict[str, Any], kind: str) -> None:
    gen = SteeredGenerator(pipes[kind], steps=STEPS)
    shape = gen.hspace_shape
    plain = gen.generate([ImageRequest(PROMPT, 0), ImageRequest(PROMPT, 1)])
    zero = gen.generate([ImageRequest(PROMPT, 0, hspace=torch.zeros(shape)), ImageRequest(PROMPT, 1)])
    big = gen.generate([ImageRequest(PROMPT, 0, hspace=torch.full(shape, 20.0)), ImageRequest(PROMPT, 1)])
    assert np.array_equal(pixels(zero[0]), pixels(plain[0]))
    assert np.abs(pixels(big[0]) - pixels(plain[0])).mean() > 3
    # same batch size and seeds: the unsteered neighbour is bit-identical on CPU
    assert np.array_equal(pixels(big[1]), pixels(plain[1]))
    # the hook lives only for its call: a later unsteered run is unaffected
    assert np.array_equal(pixels(gen.generate([ImageRequest(PROMPT, 0)])[0]), pixels(plain[0]))


def test_hook_is_removed_even_when_generation_fails(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    gen = SteeredGenerator(pipe, steps=1)
    before = gen.generate([ImageRequest(PROMPT, 0)])[0]

    def boom(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        gen.generate([ImageRequest(PROMPT, 0, hspace=torch.ones(gen.hspace_shape))], on_step=boom)
    after = gen.generate([ImageRequest(PROMPT, 0)])[0]
    assert np.array_equal(pixels(after), pixels(before))


def test_unet_without_mid_block_steers_the_deepest_down_block(no_mid_pipe: StableDiffusionPipeline) -> None:
    gen = SteeredGenerator(no_mid_pipe, steps=STEPS)
    assert gen.steered_block == "down_blocks.1"
    outputs: list[tuple[int, ...]] = []

    def grab(_m: Any, _a: Any, out: Any) -> None:
        outputs.append(tuple(out[0].shape[1:]))

    with hooked(no_mid_pipe.unet.down_blocks[1], grab):
        plain = gen.generate([ImageRequest(PROMPT, 0)])[0]
    assert outputs[0] == gen.hspace_shape == (32, 8, 8)
    vector = torch.randn(gen.hspace_shape)
    delta = bottleneck_delta(
        no_mid_pipe, SteeredGenerator(no_mid_pipe, steps=1), [ImageRequest(PROMPT, 0, hspace=vector)]
    )
    assert torch.count_nonzero(delta[0]) == 0 and torch.allclose(delta[1], vector, atol=1e-5)
    steered = gen.generate([ImageRequest(PROMPT, 0, hspace=torch.full(gen.hspace_shape, 20.0))])[0]
    assert np.abs(pixels(steered) - pixels(plain)).mean() > 3


# --------------------------------------------------------------------- noise and prompt offsets
def test_noise_offset_changes_the_image(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=STEPS)
    plain = gen.generate([ImageRequest(PROMPT, 0)])[0]
    zero = gen.generate([ImageRequest(PROMPT, 0, noise_offset=torch.zeros(gen.latent_shape))])[0]
    shifted = gen.generate([ImageRequest(PROMPT, 0, noise_offset=torch.full(gen.latent_shape, 1.5))])[0]
    assert np.array_equal(pixels(zero), pixels(plain))
    assert np.abs(pixels(shifted) - pixels(plain)).mean() > 3


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_prompt_offset_changes_conditional_embeddings_and_image(pipes: dict[str, Any], kind: str) -> None:
    pipe = pipes[kind]
    gen = SteeredGenerator(pipe, steps=STEPS)
    seq, dim = gen.prompt_embeds_shape
    offset = torch.randn(dim) * 5
    conds: list[torch.Tensor] = []

    def grab(_m: Any, _a: Any, kwargs: dict[str, Any]) -> None:
        conds.append(kwargs["encoder_hidden_states"].clone())

    with hooked(pipe.unet, grab, pre=True):
        plain = gen.generate([ImageRequest(PROMPT, 0)])[0]
        n = len(conds)
        moved = gen.generate([ImageRequest(PROMPT, 0, prompt_embeds_offset=offset)])[0]
    assert torch.equal(conds[n][0], conds[0][0])  # unconditional (negative) embeddings untouched
    assert torch.allclose(conds[n][1] - conds[0][1], offset.expand(seq, dim), atol=1e-5)
    assert np.abs(pixels(moved) - pixels(plain)).mean() > 1
    per_token = gen.generate([ImageRequest(PROMPT, 0, prompt_embeds_offset=offset.expand(seq, dim).clone())])[
        0
    ]
    assert np.array_equal(pixels(per_token), pixels(moved))


def test_sdxl_empty_negative_prompt_does_not_depend_on_batch_neighbours(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sdxl"], steps=STEPS)
    all_empty = gen.generate([ImageRequest(PROMPT, 0), ImageRequest(PROMPT, 1)])
    mixed = gen.generate([ImageRequest(PROMPT, 0), ImageRequest(PROMPT, 1, negative_prompt="dark skin")])
    assert np.array_equal(pixels(all_empty[0]), pixels(mixed[0]))
    assert not np.array_equal(pixels(all_empty[1]), pixels(mixed[1]))


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("field", "bad", "expected"),
    [
        ("noise_offset", torch.zeros(4, 8, 8), r"\(4, 16, 16\)"),
        ("hspace", torch.zeros(32, 16, 16), r"\(32, 8, 8\)"),
        ("prompt_embeds_offset", torch.zeros(31), r"\(32,\) or \(32, 32\)"),
        ("prompt_embeds_offset", torch.zeros(5, 32), r"\(32,\) or \(32, 32\)"),
    ],
)
def test_wrong_steering_shapes_fail_fast(
    pipes: dict[str, Any], field: str, bad: torch.Tensor, expected: str
) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=STEPS)
    good = ImageRequest(PROMPT, 0)
    request = ImageRequest(PROMPT, 1, **{field: bad})
    with pytest.raises(ValueError, match=f"request 1: {field} has shape .* expected {expected}") as info:
        gen.generate([good, request])
    assert "\n" not in str(info.value)


def test_invalid_settings_are_rejected(pipes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        SteeredGenerator(pipes["sd1"], height=36)
    with pytest.raises(ValueError, match="steps and batch_size"):
        SteeredGenerator(pipes["sd1"], batch_size=0)
    with pytest.raises(ValueError, match=r"record_steps \[2\] out of range"):
        SteeredGenerator(pipes["sd1"], steps=STEPS).generate([ImageRequest(PROMPT, 0)], record_steps=[2])


# ------------------------------------------------------------------------------ outputs
def test_record_steps_returns_cpu_latents_of_latent_shape(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sd1"], steps=3)
    results = gen.generate([ImageRequest(PROMPT, 0), ImageRequest(PROMPT, 1)], record_steps=[0, 2])
    for r in results:
        assert sorted(r.latents) == [0, 2]
        for lat in r.latents.values():
            assert lat.shape == gen.latent_shape and lat.dtype == torch.float32 and lat.device.type == "cpu"
    assert not torch.equal(results[0].latents[2], results[1].latents[2])
    weight = torch.ones(gen.latent_shape, requires_grad=True)
    (weight * results[0].latents[2]).sum().backward()  # usable as training data for a probe
    assert torch.equal(weight.grad, results[0].latents[2])
    assert gen.generate([ImageRequest(PROMPT, 0)])[0].latents == {}


def test_truncation_flag_for_a_long_prompt(pipes: dict[str, Any]) -> None:
    gen = SteeredGenerator(pipes["sdxl"], steps=1)
    long_prompt = " ".join(["doctor"] * 40)
    assert gen.is_truncated(long_prompt) and not gen.is_truncated(PROMPT)
    result = gen.generate([ImageRequest(long_prompt, 0)])[0]
    assert result.truncated and result.image is not None


def test_non_finite_and_black_images_are_flagged(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    gen = SteeredGenerator(pipe, steps=1)
    nan = torch.full(gen.latent_shape, float("nan"))
    broken, fine = gen.generate([ImageRequest(PROMPT, 0, noise_offset=nan), ImageRequest(PROMPT, 1)])
    assert broken.image is None and broken.drop_reason == "non-finite pixels"
    assert fine.image is not None and fine.drop_reason is None

    def black(_m: Any, _a: Any, out: torch.Tensor) -> torch.Tensor:
        return torch.full_like(out, -1.0)  # decoder output -1 maps to pixel value 0

    with hooked(pipe.vae.decoder, black):
        result = gen.generate([ImageRequest(PROMPT, 0)])[0]
    assert result.drop_reason == "all-black image"
    assert result.image is not None and pixels(result).max() == 0
