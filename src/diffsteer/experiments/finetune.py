"""Fine-tune a model away from a bias: DPOK (policy gradient with KL to the frozen model) or SFT, as a LoRA.

Both methods train a LoRA adapter on the U-Net's attention (and, with ``text_encoder_lora``, on the text
encoders' attention too, as diffusers' examples do with ``--train_text_encoder``) from the model's own
samples:

1. Sample trajectories with a stochastic DDIM sampler (``eta``, 1 by default) under classifier-free
   guidance at the model's guidance, with the adapter on (the current policy), keeping every x_t.
2. Score the final images with a reward (experiments/rewards.py); the advantage is the reward minus
   its prompt's mean (the baseline), scaled by the batch's root mean square of those differences.
3. DPOK (Fan et al., NeurIPS 2023): each denoising step is a Gaussian policy
   ``p(x_{t-1} | x_t) = N(mu_theta(x_t), sigma_t^2 I)``; the loss is ``-A * sum_t log p`` (REINFORCE, on
   policy: one update per sampled batch) plus ``kl_coef`` times the KL to the frozen model (the adapter
   switched off), which for two Gaussians of one variance is ``|mu_theta - mu_frozen|^2 / 2 sigma_t^2``
   per step, summed over the trajectory.
   SFT (the paper's supervised baseline): the denoising loss on the sampled images, weighted per image
   by ``exp(A / temperature)`` (normalised to mean 1), plus the same KL term.

Runs resume: the adapter, the optimizer and the history are checkpointed together in one file of the
run folder (published atomically), and the recipe is recorded; the seeds of every sample derive from
the recipe's seed and the iteration, so a resumed run draws what an uninterrupted one would have.
The adapter is saved with :func:`diffsteer.steering.lora.save_adapter` (diffusers-loadable).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from diffsteer.experiments.rewards import Reward, TrainingPrompt
from diffsteer.runs.atomic import atomic_write_bytes, atomic_write_text
from diffsteer.runs.store import RunFolderLock
from diffsteer.steering.lora import LORA_SCOPES
from diffsteer.summary import AdapterCurve, FinetuneSection

METHODS = ("dpok", "sft")
# Recipe fields added after run folders were first written, at the value that was the behaviour before:
# an older recipe.json without them is the same recipe (so its run still resumes).
ADDED_FIELDS: dict[str, Any] = {
    "lora_scope": "all",
    "shared_seeds": False,
    "text_encoder_lora": False,
    "preserve_prompts": [],
}
MIN_SIGMA_SHARE = 0.1  # see StochasticDDIM.policy_steps
RECIPE_FILE = "recipe.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
HISTORY_FILE = "history.json"
ADAPTER_DIR = "adapter"
CURVE_FILE = "curve.svg"  # the run's training reward against its KL, drawn when the run ends
CURVE_WINDOW = 5  # updates per running mean of a curve; its end point is the last ("the last 5 updates")

# progress(done, total, stats): stats holds the iteration's mean reward, KL and loss
FinetuneProgress = Callable[[int, int, dict[str, float]], None]


class FinetuneError(ValueError):
    """A recipe or run folder that cannot be used; the message names the parameter."""


@dataclass(frozen=True)
class FinetuneRecipe:
    """Everything that decides a fine-tune's result (recorded in the run folder and the adapter)."""

    model: str
    method: str = "dpok"
    reward: dict[str, Any] = field(default_factory=dict)  # the reward's own description
    prompts: tuple[TrainingPrompt, ...] = ()
    iterations: int = 40
    prompts_per_iteration: int = 4
    images_per_prompt: int = 8
    steps: int = 20
    guidance: float = 7.5
    eta: float = 1.0
    rank: int = 4
    lora_scope: str = "all"  # which projections the adapter changes (steering.lora.LORA_SCOPES)
    # the text encoders get an adapter too: a prompt's words are read in context, so where a model
    # misreads a word beside others (a setting beside an adjective), the fix belongs to the text side
    text_encoder_lora: bool = False
    learning_rate: float = 3e-4
    kl_coef: float = 0.01
    timesteps_per_sample: int | None = None  # None: every step of the trajectory enters the loss
    sft_temperature: float = 1.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 5
    # image j of every prompt in an update starts from the same noise (common random numbers): where
    # the noise rather than the prompt decides an attribute, the part of the gradient that does not
    # depend on the prompt then cancels between prompts that ask for different classes
    shared_seeds: bool = False
    # prompts the fine-tune should leave alone (prior preservation): each update also samples a quarter as
    # many of them as training prompts, cycling; their images get advantage 0 and no reward, so SFT trains
    # them toward the model's own samples and both methods hold them to the frozen model by the KL term
    preserve_prompts: tuple[str, ...] = ()

    def preserved_per_iteration(self) -> int:
        return max(1, self.prompts_per_iteration // 4) if self.preserve_prompts else 0

    def check(self) -> None:
        """One-line errors naming the parameter, before any model is loaded."""
        if self.method not in METHODS:
            raise FinetuneError(f"method {self.method!r}: choose {' or '.join(METHODS)}")
        if self.lora_scope not in LORA_SCOPES:
            raise FinetuneError(f"lora_scope {self.lora_scope!r}: choose {' or '.join(LORA_SCOPES)}")
        if not self.prompts:
            raise FinetuneError("prompts: give at least one training prompt")
        if any(not str(p).strip() for p in self.preserve_prompts):
            raise FinetuneError("preserve_prompts: a preserved prompt is empty")
        positive = {
            "iterations": self.iterations,
            "prompts_per_iteration": self.prompts_per_iteration,
            "steps": self.steps,
            "rank": self.rank,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise FinetuneError(f"{name} must be at least 1, got {value}")
        if self.images_per_prompt < 2:
            raise FinetuneError(
                f"images_per_prompt must be at least 2 (the reward is normalised per prompt), "
                f"got {self.images_per_prompt}"
            )
        if not 0 < self.eta <= 1:
            raise FinetuneError(f"eta must be in (0, 1] (the sampler must be stochastic), got {self.eta}")
        if self.learning_rate <= 0 or self.kl_coef < 0 or self.guidance < 0 or self.sft_temperature <= 0:
            raise FinetuneError(
                "learning_rate and sft_temperature must be > 0, kl_coef and guidance >= 0 "
                f"(got {self.learning_rate}, {self.sft_temperature}, {self.kl_coef}, {self.guidance})"
            )
        if self.timesteps_per_sample is not None and not 1 <= self.timesteps_per_sample <= self.steps:
            raise FinetuneError(
                f"timesteps_per_sample must be in 1..steps ({self.steps}), got {self.timesteps_per_sample}"
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = [p.to_json() for p in self.prompts]
        data["preserve_prompts"] = list(self.preserve_prompts)
        return data


@dataclass
class FinetuneResult:
    adapter: Path
    history: list[dict[str, float]]
    out_dir: Path
    curve: Path | None = None  # the training reward against the KL, per update (an SVG chart)


# --------------------------------------------------------------------------------------- sampler
@dataclass
class Trajectories:
    """Sampled denoising trajectories of one batch: ``latents[s]`` is x before step s (s = 0..steps)."""

    latents: list[torch.Tensor]
    timesteps: list[int]
    conditioning: dict[str, Any]
    prompts: list[TrainingPrompt]
    images: list[Image.Image]


class StochasticDDIM:
    """DDIM with ``eta`` > 0 on a model's noise schedule: every step a Gaussian with a known variance.

    Built from the pipeline's own scheduler config (its betas and prediction type); with
    ``set_alpha_to_one=False`` even the last step keeps a variance, so every step is a policy step.
    """

    def __init__(self, scheduler_config: Any, steps: int, eta: float) -> None:
        import warnings

        from diffusers import DDIMScheduler

        with warnings.catch_warnings():  # an old steps_offset in a config only matters to its own sampler
            warnings.simplefilter("ignore")
            scheduler = DDIMScheduler.from_config(
                scheduler_config, set_alpha_to_one=False, clip_sample=False, thresholding=False
            )
        scheduler.set_timesteps(steps)
        self.scheduler = scheduler
        self.timesteps = [int(t) for t in scheduler.timesteps]
        self.alphas = scheduler.alphas_cumprod.to(torch.float64)
        self.prediction = scheduler.config.prediction_type
        self.eta = float(eta)

    def _alpha(self, index: int) -> tuple[float, float]:
        t = self.timesteps[index]
        a_t = float(self.alphas[t])
        nxt = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else None
        a_prev = float(self.alphas[nxt]) if nxt is not None else float(self.alphas[0])
        return a_t, a_prev

    def sigma(self, index: int) -> float:
        a_t, a_prev = self._alpha(index)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        return self.eta * math.sqrt(max(variance, 0.0))

    def policy_steps(self) -> list[int]:
        """The steps that enter the loss: those whose standard deviation is at least ``MIN_SIGMA_SHARE``
        of the largest. The last step into t = 0 keeps a sliver of variance (pictoworld, 20 steps: 0.03
        against 0.68 at the first); its ``1 / sigma^2`` would weigh 500 times the first step's and bury
        the early steps, where a picture's content is decided, under one step that only sharpens it."""
        sigmas = [self.sigma(i) for i in range(len(self.timesteps))]
        floor = MIN_SIGMA_SHARE * max(sigmas)
        return [i for i, sigma in enumerate(sigmas) if sigma > 0 and sigma >= floor]

    def mean(self, index: int, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The mean of x_{t-1} given x_t and the model's (guided) output at step ``index``."""
        a_t, a_prev = self._alpha(index)
        sa, s1a = math.sqrt(a_t), math.sqrt(1 - a_t)
        if self.prediction == "epsilon":
            eps = output
            x0 = (x - s1a * eps) / sa
        elif self.prediction == "v_prediction":
            x0 = sa * x - s1a * output
            eps = sa * output + s1a * x
        elif self.prediction == "sample":
            x0 = output
            eps = (x - sa * x0) / s1a
        else:  # pragma: no cover - diffusers has only these three
            raise FinetuneError(f"unsupported prediction type {self.prediction!r}")
        sigma = self.sigma(index)
        return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps


def _conditioning(generator: Any, prompts: Sequence[TrainingPrompt]) -> dict[str, Any]:
    """The U-Net's conditioning for a batch, encoded exactly as diffsteer's generator encodes it."""
    from diffsteer.generate import ImageRequest

    encoded = generator.encode([ImageRequest(prompt=p.text, seed=0) for p in prompts])
    cond: dict[str, Any] = {"cond": encoded["prompt_embeds"], "uncond": encoded.get("negative_prompt_embeds")}
    if "pooled_prompt_embeds" in encoded:  # SDXL: pooled text embedding and the size/crop ids
        h, w = generator.height, generator.width
        ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=encoded["prompt_embeds"].dtype)
        ids = ids.to(encoded["prompt_embeds"].device).repeat(len(prompts), 1)
        cond["pooled"] = encoded["pooled_prompt_embeds"]
        cond["uncond_pooled"] = encoded.get("negative_pooled_prompt_embeds")
        cond["time_ids"] = ids
    return cond


def _unet_output(
    unet: Any, x: torch.Tensor, t: int, cond: dict[str, Any], guidance: float, *, guided: bool
) -> torch.Tensor:
    """The U-Net's output at ``x``, under classifier-free guidance when ``guided``."""
    timestep = torch.full((1,), t, device=x.device, dtype=torch.long)
    if not guided:
        extra = {}
        if "pooled" in cond:
            extra = {"added_cond_kwargs": {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}}
        return unet(x, timestep, encoder_hidden_states=cond["cond"], **extra).sample
    both = torch.cat([x, x])
    extra = {}
    if "pooled" in cond:
        pooled = torch.cat([cond["uncond_pooled"], cond["pooled"]])
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": torch.cat([cond["time_ids"]] * 2)}}
    out = unet(
        both, timestep, encoder_hidden_states=torch.cat([cond["uncond"], cond["cond"]]), **extra
    ).sample
    uncond, conditional = out.chunk(2)
    return uncond + guidance * (conditional - uncond)


def _decode(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
    with torch.no_grad():
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def sample_trajectories(
    generator: Any,
    sampler: StochasticDDIM,
    prompts: Sequence[TrainingPrompt],
    seeds: Sequence[int],
) -> Trajectories:
    """Sample one trajectory per (prompt, seed) with the adapter as it is now, under guidance."""
    pipe = generator.pipe
    unet = pipe.unet
    device = unet.device
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(generator.latent_shape, generator=g) for g in generators])
    x = x.to(device=device, dtype=unet.dtype)
    with torch.no_grad():
        cond = _conditioning(generator, prompts)
        states = [x.detach().cpu()]
        for index, t in enumerate(sampler.timesteps):
            output = _unet_output(unet, x, t, cond, generator.guidance, guided=generator.uses_guidance)
            mean = sampler.mean(index, x.float(), output.float())
            noise = torch.stack([torch.randn(generator.latent_shape, generator=g) for g in generators])
            sigma = sampler.sigma(index)
            x = (mean + sigma * noise.to(device) if sigma > 0 else mean).to(unet.dtype)
            states.append(x.detach().cpu())
    return Trajectories(
        latents=states,
        timesteps=sampler.timesteps,
        conditioning=cond,
        prompts=list(prompts),
        images=_decode(pipe, x),
    )


def normalised_advantages(rewards: torch.Tensor, prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
    """Each reward minus its prompt's mean (the baseline), over the batch's spread of those differences.

    One scale for the whole batch: dividing each prompt by its own spread would blow a prompt whose
    images all score alike (a judge's noise in the third decimal) up to the same weight as a prompt
    with a real difference between its images.
    """
    out = torch.zeros_like(rewards, dtype=torch.float32)
    texts = [p.text for p in prompts]
    for text in dict.fromkeys(texts):
        idx = torch.tensor([i for i, t in enumerate(texts) if t == text])
        group = rewards[idx].float()
        out[idx] = group - group.mean()
    return out / (out.pow(2).mean().sqrt() + 1e-6)


# ---------------------------------------------------------------------------------------- losses
def _set_adapters(pipe: Any, on: bool) -> None:
    """Switch the adapter being trained on or off, in the U-Net and every text encoder that has it."""
    from diffsteer.steering.lora import adapted_text_encoders

    for model in (pipe.unet, *adapted_text_encoders(pipe).values()):
        if on:
            model.enable_adapters()
        else:
            model.disable_adapters()


def step_losses(
    generator: Any,
    sampler: StochasticDDIM,
    batch: Trajectories,
    advantages: torch.Tensor,
    recipe: FinetuneRecipe,
    iteration_seed: int,
) -> dict[str, float]:
    """Accumulate the gradients of one update (per step, to bound memory); return its statistics."""
    pipe = generator.pipe
    unet = pipe.unet
    device = unet.device
    chooser = torch.Generator("cpu").manual_seed(iteration_seed)
    stochastic = sampler.policy_steps()
    chosen = stochastic
    if recipe.timesteps_per_sample is not None and recipe.timesteps_per_sample < len(stochastic):
        order = torch.randperm(len(stochastic), generator=chooser)[: recipe.timesteps_per_sample]
        chosen = sorted(stochastic[i] for i in order.tolist())
    scale = len(stochastic) / len(chosen)  # the chosen steps estimate the sum over the trajectory
    adv = advantages.to(device)
    weights = torch.exp(advantages / recipe.sft_temperature)
    weights = (weights / weights.mean()).to(device)
    dims = tuple(range(1, batch.latents[0].ndim))
    cond = frozen_cond = batch.conditioning
    if recipe.text_encoder_lora:  # the frozen model reads the prompts with the text adapter off too
        with torch.no_grad():
            _set_adapters(pipe, False)
            frozen_cond = _conditioning(generator, batch.prompts)
            _set_adapters(pipe, True)
    kl_total, pg_total, sft_total = 0.0, 0.0, 0.0
    for index in chosen:
        t = batch.timesteps[index]
        x = batch.latents[index].to(device=device, dtype=unet.dtype)
        x_next = batch.latents[index + 1].to(device=device, dtype=torch.float32)
        sigma2 = sampler.sigma(index) ** 2
        with torch.no_grad():
            _set_adapters(pipe, False)
            frozen = _unet_output(unet, x, t, frozen_cond, generator.guidance, guided=generator.uses_guidance)
            _set_adapters(pipe, True)
            mean_frozen = sampler.mean(index, x.float(), frozen.float())
        if recipe.text_encoder_lora:
            # encoded again with gradients for each step: every step's backward frees the graph it used
            cond = _conditioning(generator, batch.prompts)
        output = _unet_output(unet, x, t, cond, generator.guidance, guided=generator.uses_guidance)
        mean = sampler.mean(index, x.float(), output.float())
        kl = ((mean - mean_frozen) ** 2).sum(dim=dims) / (2 * sigma2)
        loss = recipe.kl_coef * scale * kl.mean()
        if recipe.method == "dpok":
            log_prob = -((x_next - mean) ** 2).sum(dim=dims) / (2 * sigma2)
            policy = -(adv * log_prob).mean() * scale
            loss = loss + policy
            pg_total += float(policy.detach())
        else:
            # reward-weighted denoising loss on the sampled images at this step's noise level
            x0 = batch.latents[-1].to(device=device, dtype=torch.float32)
            noise = torch.randn(x0.shape, generator=chooser).to(device)
            timestep = torch.full((x0.shape[0],), t, dtype=torch.long)
            noisy = sampler.scheduler.add_noise(x0, noise, timestep).to(unet.dtype)
            if sampler.prediction == "v_prediction":
                target = sampler.scheduler.get_velocity(x0, noise, timestep)
            elif sampler.prediction == "sample":
                target = x0
            else:
                target = noise
            pred = _unet_output(unet, noisy, t, cond, generator.guidance, guided=False)
            mse = ((pred.float() - target) ** 2).mean(dim=dims)
            denoise = (weights * mse).mean() / len(chosen)
            loss = loss + denoise
            sft_total += float(denoise.detach())
        loss.backward()
        kl_total += float(kl.detach().mean()) * scale
    return {"kl": kl_total, "policy_loss": pg_total, "sft_loss": sft_total}


# ------------------------------------------------------------------------------------ checkpoints
def _save_checkpoint(path: Path, pipe: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The adapter, the optimizer and the run state in one safetensors file, published atomically."""
    from safetensors.torch import save

    from diffsteer.steering.lora import adapted_text_encoders, lora_state_dict, peft_state

    tensors = {f"lora.{k}": v for k, v in lora_state_dict(pipe.unet).items()}
    for name, encoder in adapted_text_encoders(pipe).items():
        tensors |= {f"{name}.{k}": v for k, v in peft_state(encoder).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, float]] = {}
    for idx, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = float(value)
    meta = {
        "state": json.dumps(state),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_checkpoint(path: Path, pipe: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from diffsteer.steering.lora import adapted_text_encoders, load_lora_state, load_peft_state

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
    load_lora_state(pipe.unet, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
    for name, encoder in adapted_text_encoders(pipe).items():
        prefix = f"{name}."
        load_peft_state(encoder, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in json.loads(meta["optim_scalars"]).items():
        for name, value in values.items():
            state.setdefault(int(idx), {})[name] = torch.tensor(value, dtype=torch.float32)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


def _check_recipe(out: Path, recipe_json: dict[str, Any]) -> None:
    path = out / RECIPE_FILE
    if not path.exists():
        atomic_write_text(path, json.dumps(recipe_json, indent=2, sort_keys=True))
        return
    recorded = {**ADDED_FIELDS, **json.loads(path.read_text())}
    if recorded != recipe_json:
        differs = sorted(k for k in set(recorded) | set(recipe_json) if recorded.get(k) != recipe_json.get(k))
        raise FinetuneError(
            f"--out {out} holds a fine-tune with another recipe ({', '.join(differs)} differ); "
            "choose another --out to start a new one"
        )


# ------------------------------------------------------------------------------------------ train
def training_curve_points(history: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """The per-update training reward and KL to the frozen model, compact enough for the adapter's
    metadata (a few kB for hundreds of updates), so the adapter carries its own reward-KL curve."""
    return [
        {
            "iteration": int(row["iteration"]),
            "reward": round(float(row["reward"]), 6),
            "kl": round(float(row["kl"]), 6),
        }
        for row in history
    ]


def finetune(
    generator: Any,
    reward: Reward,
    recipe: FinetuneRecipe,
    out_dir: Path | str,
    *,
    progress: FinetuneProgress | None = None,
) -> FinetuneResult:
    """Train (or resume) a LoRA fine-tune of ``generator.pipe`` into ``out_dir``; return the adapter.

    ``generator``: a :class:`~diffsteer.generate.SteeredGenerator` whose steps and guidance are the
    recipe's (its pipeline gets the trainable adapter). The adapter lands in ``out_dir/adapter``.
    """
    from diffsteer.steering.lora import require_peft

    recipe.check()
    require_peft()
    if generator.steps != recipe.steps or not math.isclose(generator.guidance, recipe.guidance):
        raise FinetuneError(
            f"the generator samples with steps={generator.steps}, guidance={generator.guidance}; "
            f"the recipe says {recipe.steps}, {recipe.guidance}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one process trains a run folder at a time: two would race each other's checkpoints
    with RunFolderLock(out):
        return _train(generator, reward, recipe, out, progress)


def _train(
    generator: Any,
    reward: Reward,
    recipe: FinetuneRecipe,
    out: Path,
    progress: FinetuneProgress | None,
) -> FinetuneResult:
    """The body of :func:`finetune`, with the run folder's lock held."""
    from diffsteer.steering.lora import (
        CURVE_KEY,
        adapted_text_encoders,
        add_lora,
        add_text_encoder_lora,
        base_model_metadata,
        lora_parameters,
        save_adapter,
    )

    pipe = generator.pipe
    base = base_model_metadata(pipe, recipe.model)  # fingerprints of the base model, before the adapter
    recipe_json = recipe.to_json()
    _check_recipe(out, recipe_json)

    torch.manual_seed(recipe.seed)  # the adapter's initial A matrices
    add_lora(pipe.unet, rank=recipe.rank, scope=recipe.lora_scope)
    if recipe.text_encoder_lora:
        add_text_encoder_lora(pipe, rank=recipe.rank)
    params = lora_parameters(pipe.unet)
    for encoder in adapted_text_encoders(pipe).values():
        params += lora_parameters(encoder)
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    sampler = StochasticDDIM(pipe.scheduler.config, recipe.steps, recipe.eta)

    checkpoint = out / CHECKPOINT_FILE
    state: dict[str, Any] = {"iteration": 0, "history": []}
    if checkpoint.exists():
        state = _load_checkpoint(checkpoint, pipe, optimizer)
    history: list[dict[str, float]] = state["history"]
    n_prompts = len(recipe.prompts)
    pipe.unet.train()
    for iteration in range(int(state["iteration"]), recipe.iterations):
        started = time.monotonic()
        chosen = [
            recipe.prompts[(iteration * recipe.prompts_per_iteration + j) % n_prompts]
            for j in range(recipe.prompts_per_iteration)
        ]
        kept = recipe.preserved_per_iteration()
        preserved = [
            TrainingPrompt(recipe.preserve_prompts[(iteration * kept + j) % len(recipe.preserve_prompts)])
            for j in range(kept)
        ]
        # the trained prompts come first, so their images and seeds are those of a run without preservation
        prompts = [p for p in (*chosen, *preserved) for _ in range(recipe.images_per_prompt)]
        trained = len(chosen) * recipe.images_per_prompt
        base_seed = recipe.seed * 1_000_003 + iteration * 10_007
        if recipe.shared_seeds:
            seeds = [base_seed + j for _ in (*chosen, *preserved) for j in range(recipe.images_per_prompt)]
        else:
            seeds = [base_seed + i for i in range(len(prompts))]
        batch = sample_trajectories(generator, sampler, prompts, seeds)
        rewards = reward(batch.images[:trained], prompts[:trained])
        advantages = torch.zeros(len(prompts), dtype=torch.float32)  # preserved images: 0
        advantages[:trained] = normalised_advantages(rewards, prompts[:trained])
        optimizer.zero_grad(set_to_none=True)
        stats = step_losses(generator, sampler, batch, advantages, recipe, base_seed)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        row = {
            "iteration": iteration + 1,
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "kl": stats["kl"],
            "policy_loss": stats["policy_loss"],
            "sft_loss": stats["sft_loss"],
            "grad_norm": float(grad_norm),
            "seconds": time.monotonic() - started,
        }
        history.append(row)
        done = iteration + 1
        if done % recipe.checkpoint_every == 0 or done == recipe.iterations:
            _save_checkpoint(checkpoint, pipe, optimizer, {"iteration": done, "history": history})
        if progress is not None:
            progress(done, recipe.iterations, row)
    pipe.unet.eval()

    metadata = {
        "method": recipe.method,
        "reward": recipe.reward,
        "lora_scope": recipe.lora_scope,
        "text_encoder_lora": recipe.text_encoder_lora,
        "recipe": recipe_json,
        **base,
        "final": history[-1] if history else {},
        CURVE_KEY: training_curve_points(history),
    }
    adapter = out / ADAPTER_DIR
    save_adapter(pipe, adapter, metadata)
    atomic_write_text(out / HISTORY_FILE, json.dumps(history, indent=2))
    curve = _write_curve(out, adapter_curve(f"lora:{adapter}", adapter))
    return FinetuneResult(adapter=adapter, history=history, out_dir=out, curve=curve)


# ---------------------------------------------------------------------------------- reward-KL curves
REWARD_NOTE = (
    "the training reward: the batch's mean reward per update, as each adapter's own reward judge scored "
    "the images it sampled (the model's CLIP, not an oracle)"
)
KL_NOTE = (
    "the KL of the adapter's sampler to the frozen model's, summed over the denoising trajectory, on "
    "the update's own batch"
)


def _reward_label(reward: dict[str, Any]) -> str:
    """``alignment (culture)``, ``fairness (gender)``, ``safety (violence)``, or a callable's name."""
    name = str(reward.get("name", "?"))
    if isinstance(reward.get("axes"), dict):
        return f"{name} ({', '.join(reward['axes'])})"
    if reward.get("axis"):
        return f"{name} ({reward['axis']})"
    return name


def adapter_curve(mitigation: str, folder: Path | str) -> AdapterCurve:
    """The reward-KL curve an adapter recorded, as the audit summary carries it (empty with a note
    for an adapter that recorded none)."""
    from diffsteer.steering.lora import read_adapter_metadata, read_training_curve

    metadata = read_adapter_metadata(folder)
    recipe = json.loads(metadata.get("recipe", "{}"))
    read = read_training_curve(folder)
    curve = AdapterCurve(
        mitigation=mitigation,
        method=metadata.get("method"),
        reward=_reward_label(json.loads(metadata.get("reward", "{}"))),
        kl_coef=recipe.get("kl_coef"),
        learning_rate=recipe.get("learning_rate"),
        lora_scope=recipe.get("lora_scope", ADDED_FIELDS["lora_scope"])
        + (" + text encoders" if recipe.get("text_encoder_lora") else ""),
    )
    if read is None:
        curve.note = "the adapter records no training history (saved before adapters carried one)"
        return curve
    updates, curve.source = read
    curve.updates = updates
    curve.window = CURVE_WINDOW
    curve.running_mean = running_means(updates, CURVE_WINDOW)
    if curve.running_mean:
        curve.end_kl, curve.end_reward = curve.running_mean[-1]["kl"], curve.running_mean[-1]["reward"]
    return curve


def running_means(updates: Sequence[dict[str, float]], window: int) -> list[dict[str, float]]:
    """Per update, the mean reward and KL of it and the ``window - 1`` before it. The first update
    (KL 0: the adapter starts at the base model) is left out, so each mean is of a trained adapter."""
    trained = [u for u in updates if u["kl"] > 0]
    out = []
    for i, update in enumerate(trained):
        chunk = trained[max(0, i - window + 1) : i + 1]
        out.append(
            {
                "iteration": update["iteration"],
                "reward": sum(u["reward"] for u in chunk) / len(chunk),
                "kl": sum(u["kl"] for u in chunk) / len(chunk),
            }
        )
    return out


def finetune_section(mitigations: Sequence[str]) -> FinetuneSection | None:
    """summary.json's ``finetune`` section: one curve per ``lora:FOLDER`` mitigation; None without one."""
    from diffsteer.experiments.mitigations import is_lora_mitigation, lora_folder

    curves = [adapter_curve(m, lora_folder(m)) for m in mitigations if is_lora_mitigation(m)]
    if not curves:
        return None
    return FinetuneSection(reward=REWARD_NOTE, kl=KL_NOTE, adapters=curves)


def _write_curve(out: Path, curve: AdapterCurve) -> Path | None:
    """The run's own reward-KL chart, beside its history (the report draws the same chart)."""
    from diffsteer.report.finetune import reward_kl_chart

    if not curve.updates:
        return None
    return atomic_write_text(out / CURVE_FILE, reward_kl_chart([curve]))


# ------------------------------------------------------------------------------------ entry point
PROMPT_ATTRIBUTE_SEPARATOR = "::"


def parse_prompt(text: str) -> TrainingPrompt:
    """``"a photo of a doctor::culture=non-western,gender=woman"`` -> prompt text and attributes."""
    body, _, tail = text.partition(PROMPT_ATTRIBUTE_SEPARATOR)
    attributes: dict[str, str] = {}
    for item in (x.strip() for x in tail.split(",") if x.strip()):
        axis, eq, cls = item.partition("=")
        if not eq or not axis.strip() or not cls.strip():
            raise FinetuneError(f"--prompt {text!r}: attributes are written TEXT::axis=class[,axis=class]")
        attributes[axis.strip()] = cls.strip()
    if not body.strip():
        raise FinetuneError(f"--prompt {text!r}: the prompt text is empty")
    return TrainingPrompt(body.strip(), attributes)


def read_prompts_file(path: Path | str) -> list[TrainingPrompt]:
    """A YAML list of prompts: strings, or ``{text: ..., attributes: {axis: class}}`` mappings."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FinetuneError(f"--prompts {path}: cannot read it ({str(exc).splitlines()[0]})") from None
    items = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise FinetuneError(f"--prompts {path}: expected a non-empty list of prompts")
    prompts = []
    for item in items:
        if isinstance(item, str):
            prompts.append(parse_prompt(item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            attrs = item.get("attributes") or {}
            if not isinstance(attrs, dict):
                raise FinetuneError(f"--prompts {path}: attributes of {item['text']!r} must be a mapping")
            prompts.append(TrainingPrompt(item["text"], {str(k): str(v) for k, v in attrs.items()}))
        else:
            raise FinetuneError(f"--prompts {path}: each prompt is a string or has a 'text' field")
    return prompts


def run_finetune(
    out_dir: Path | str,
    *,
    model: str | None = None,
    method: str = "dpok",
    reward: str = "fairness",
    prompts: Sequence[TrainingPrompt] = (),
    axis: str | None = None,
    target: dict[str, float] | None = None,
    concept: str = "violence",
    classifier: str | None = None,
    iterations: int = 40,
    prompts_per_iteration: int = 4,
    images_per_prompt: int = 8,
    steps: int = 20,
    guidance: float | None = None,
    eta: float = 1.0,
    rank: int = 4,
    lora_scope: str = "all",
    text_encoder_lora: bool = False,
    learning_rate: float = 3e-4,
    kl_coef: float = 0.01,
    timesteps_per_sample: int | None = None,
    sft_temperature: float = 1.0,
    seed: int = 0,
    checkpoint_every: int = 5,
    shared_seeds: bool = False,
    preserve_prompts: Sequence[str] = (),
    device: str = "cpu",
    progress: FinetuneProgress | None = None,
) -> FinetuneResult:
    """``diffsteer finetune``: load the model and its CLIP judge, build the reward, train (or resume)."""
    from diffsteer.attributes.clip_zero_shot import ClipZeroShotClassifier
    from diffsteer.experiments.rewards import build_reward, check_reward_name
    from diffsteer.models import default_classifier, default_guidance, load_pipeline
    from diffsteer.registry import default_model
    from diffsteer.runs.executors import GeneratorSpec
    from diffsteer.steering.lora import require_peft

    require_peft()
    check_reward_name(reward)
    model = default_model() if model is None else model
    guidance = default_guidance(model) if guidance is None else float(guidance)
    probe = FinetuneRecipe(
        model=model,
        method=method,
        prompts=tuple(prompts),
        iterations=iterations,
        prompts_per_iteration=prompts_per_iteration,
        images_per_prompt=images_per_prompt,
        steps=steps,
        guidance=guidance,
        eta=eta,
        rank=rank,
        lora_scope=lora_scope,
        text_encoder_lora=text_encoder_lora,
        learning_rate=learning_rate,
        kl_coef=kl_coef,
        timesteps_per_sample=timesteps_per_sample,
        sft_temperature=sft_temperature,
        seed=seed,
        checkpoint_every=checkpoint_every,
        shared_seeds=shared_seeds,
        preserve_prompts=tuple(preserve_prompts),
    )
    probe.check()  # bad numbers fail before any model is loaded
    if text_encoder_lora:
        from diffsteer.steering.lora import require_text_encoder_peft

        require_text_encoder_peft()
    if Path(out_dir).is_dir():  # a folder another process is training fails now, not after the load
        with RunFolderLock(Path(out_dir)):
            pass
    judge = ClipZeroShotClassifier.from_pretrained(classifier or default_classifier(model), device=device)
    scorer = build_reward(reward, judge, axis=axis, target=target, concept=concept, prompts=prompts)
    recipe = dataclasses.replace(probe, reward=scorer.describe())
    pipe = load_pipeline(model, device=device, dtype="float32")
    generator = GeneratorSpec(model=model, steps=steps, guidance=guidance, batch_size=len(prompts) or 1)
    return finetune(generator.prepare(pipe), scorer, recipe, out_dir, progress=progress)
