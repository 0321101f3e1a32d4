"""Train the pictoworld models from nothing but the world spec and a seed.

Stages, each saved in the standard Hugging Face layout so the usual loaders open them offline:

1. a word-level tokenizer over the world's vocabulary;
2. an ``AutoencoderKL`` (32x32 RGB <-> 8x8x4 latents);
3. a ``UNet2DConditionModel`` with a cross-attention mid-block, trained jointly with a
   ``CLIPTextModel`` on (render, caption) pairs with caption dropout for classifier-free guidance
   -> ``pipeline/`` loads with ``StableDiffusionPipeline.from_pretrained``;
4. a ``CLIPModel`` trained contrastively with multi-positive targets (a caption is a positive for
   every picture in the batch that makes it true) -> ``clip/`` loads with ``CLIPModel.from_pretrained``;
5. the supervised oracle -> ``oracle/``.

Weights are stored in fp16 (safetensors); a ``training_record.json`` keeps the command, seed,
steps, final losses and timings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffsteer.pictoworld import oracle as oracle_mod
from diffsteer.pictoworld import world
from diffsteer.pictoworld.render import render_many
from diffsteer.tokenizer import EOS_ID, build_word_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TOKENS = 32


@dataclass(frozen=True)
class TrainConfig:
    """Sizes and schedule. The defaults are the bundled model's: about 70 minutes on 2 CPU cores."""

    seed: int = 0
    # The training pairs' own seed (None: ``seed``). Setting it apart from ``seed`` tells whether a
    # candidate's per-seed offsets come from the pictures it saw or from the training's own randomness
    # (the VAE and U-Net initialisation, batch order and noise), which ``seed`` keeps.
    data_seed: int | None = None
    n_images: int = 30_000
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_channels: tuple[int, ...] = (48, 96)
    unet_layers: int = 1
    text_hidden: int = 64
    text_layers: int = 2
    unet_steps: int = 9000
    unet_batch: int = 64
    unet_lr: float = 8e-4
    caption_dropout: float = 0.1
    # Share of U-Net samples whose timestep is drawn from the noisier half only (0: uniform, the
    # bundled recipe). Which mode a sample ends in (a doctor with or without drugs) is settled at high
    # noise, where the noise-prediction loss says least about the picture; minority modes came out
    # at 60-90% of their planted rates with uniform timesteps (v9 candidates). At 0.5 for 3,000
    # warm-start steps it did not raise them (RESULTS.md, "pictoworld v9 under-draws").
    high_noise_share: float = 0.0
    # Share of training pairs that show a planted combination's profession in its other setting under
    # that setting's caption (world.contrast_sample; 0: every recipe so far). A recipe experiment.
    contrast_rate: float = 0.0
    ema_decay: float = 0.998
    # With a fine-tune: pictures of these professions train on the world's images as usual, every other
    # picture toward the starting model's own noise prediction on the same noisy latent (distillation).
    # The cells the world change leaves alone then have a fixed target, not a fresh draw of the data:
    # plain fine-tunes of v9 let the doctor's drugs drift 0.215 -> 0.25-0.28 (RESULTS.md, v9c25).
    relearn_professions: tuple[str, ...] = ()
    clip_images: int = 20_000
    clip_hidden: int = 64
    clip_layers: int = 2
    clip_patch: int = 4
    clip_steps: int = 1000
    clip_batch: int = 128
    clip_lr: float = 1e-3
    oracle_width: int = 16
    oracle_steps: int = 500
    oracle_batch: int = 64
    threads: int = 0  # 0: torch's default


PRESETS: dict[str, TrainConfig] = {
    "full": TrainConfig(),
    # A few steps at tiny sizes: exercises every stage and the saved layouts, in seconds.
    "smoke": TrainConfig(
        n_images=512,
        vae_channels=(8, 16, 16),
        vae_steps=4,
        vae_batch=16,
        unet_channels=(16, 32),
        unet_layers=1,
        text_hidden=32,
        text_layers=1,
        unet_steps=4,
        unet_batch=16,
        clip_images=256,
        clip_hidden=32,
        clip_layers=1,
        clip_patch=8,
        clip_steps=4,
        clip_batch=32,
        oracle_width=8,
        oracle_steps=4,
        oracle_batch=32,
    ),
}

Progress = Callable[[str, int, int, float], None]  # stage, step, total, loss


def _lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _degrade(x: torch.Tensor, gen: torch.Generator, noise: float) -> torch.Tensor:
    """Blur and noise of random strength per image, so the classifiers also read generated pictures.

    Renders are crisp; what the diffusion model draws is softer and grainier. A classifier trained on
    renders alone reads colours off edges it never saw blurred (skin tone suffered most).
    """
    n = len(x)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    mix = torch.rand(n, 1, 1, 1, generator=gen).to(x.device)
    sigma = noise * torch.rand(n, 1, 1, 1, generator=gen).to(x.device)
    return (1 - mix) * x + mix * blurred + sigma * torch.randn(x.shape, generator=gen).to(x.device)


def build_tokenizer():
    # "non-western" and "dark-skinned" stay one word each (see build_word_tokenizer)
    return build_word_tokenizer(world.vocabulary_texts(), max_length=MAX_TOKENS, hyphenated_words=True)


def _text_config(tokenizer, hidden: int, layers: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=projection or hidden,
        bos_token_id=0,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


def _tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


# ---------------------------------------------------------------- stages


def _fresh_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL

    n_blocks = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_blocks,
        up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def train_vae(cfg: TrainConfig, images: torch.Tensor, progress: Progress, init=None):
    """Train the VAE (``init``: an existing one to go on training instead of a fresh one) on ``images``'
    device."""
    vae = (_fresh_vae(cfg) if init is None else init).to(images.device)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loss = torch.tensor(0.0)
    for step in range(cfg.vae_steps):
        _set_lr(opt, _lr_at(step, cfg.vae_steps, cfg.vae_lr, warmup=100))
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=gen)
        x = images[idx.to(images.device)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress("vae", step + 1, cfg.vae_steps, float(loss.detach()))
    mean, std, figures = _encode_training_images(vae, images)
    return vae, mean, std, {"vae_loss": float(loss.detach()), **figures}


def vae_source(folder: Path | str, flag: str = "vae_from") -> Path:
    """``folder``'s VAE (pipeline/vae), checked before training; a ValueError naming ``flag`` if absent."""
    vae_dir = Path(folder) / "pipeline" / "vae"
    if not (vae_dir / "config.json").exists():
        raise ValueError(f"{flag} {folder}: no pipeline/vae/ there (a `pictoworld train` output)")
    return vae_dir


def finetune_source(folder: Path | str, flag: str = "finetune_from") -> Path:
    """``folder``, checked before training: a `pictoworld train` output with pipeline/, clip/ and
    oracle/; a ValueError naming ``flag`` if anything is missing."""
    folder = Path(folder)
    for part in ("pipeline/model_index.json", "clip/config.json", "oracle"):
        if not (folder / part).exists():
            raise ValueError(f"{flag} {folder}: no {part} there (a `pictoworld train` output)")
    return folder


def reuse_vae(cfg: TrainConfig, folder: Path, images: torch.Tensor):
    """A trained folder's VAE (``folder``/pipeline/vae) in place of a freshly trained one, and the
    training images' latents under it. A fresh VAE is still built and dropped, so the global random
    state the U-Net's initialisation draws from is the one a run that trained its own VAE would have:
    two runs that differ only in this VAE differ in nothing else."""
    from diffusers import AutoencoderKL

    vae_dir = vae_source(folder)
    _fresh_vae(cfg)
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).to(images.device)
    mean, std, figures = _encode_training_images(vae, images)
    return vae, mean, std, figures  # no vae_loss: this run trained no VAE


def _encode_training_images(vae, images: torch.Tensor):
    vae.eval()
    with torch.no_grad():
        means, stds = [], []
        for i in range(0, len(images), 512):
            dist = vae.encode(images[i : i + 512]).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        mean, std = torch.cat(means), torch.cat(stds)
        # As Stable Diffusion does: scale latents to unit variance for the U-Net.
        # drawn on the CPU, as every other draw, so a GPU run gets the scaling factor a CPU run gets
        scaling = float(1.0 / (mean + std * torch.randn_like(std, device="cpu").to(std.device)).std())
    vae.register_to_config(scaling_factor=scaling)
    recon_err = float(F.l1_loss(vae.decode(mean[:512]).sample, images[:512]).detach()) if len(images) else 0.0
    return mean, std, {"vae_recon_l1": recon_err, "scaling_factor": scaling}


def training_timesteps(n: int, n_steps: int, high_noise_share: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` training timesteps: uniform over ``n_steps``, except that a ``high_noise_share`` of them are
    uniform over the noisier half only. At share 0 nothing else is drawn from ``gen``, so the uniform
    recipe stays bit for bit."""
    t = torch.randint(0, n_steps, (n,), generator=gen)
    if high_noise_share:
        high = torch.rand(n, generator=gen) < high_noise_share
        t = torch.where(high, n_steps // 2 + t // 2, t)
    return t


def _make_unet(cfg: TrainConfig):
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=8,
        norm_num_groups=16 if min(cfg.unet_channels) >= 16 else 8,
    )


def _noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )


def relearned(pairs, professions: tuple[str, ...]) -> torch.Tensor:
    """Which training pairs learn from their picture (True) rather than from the starting model's
    prediction: those showing one of ``professions``; all of them when none is named."""
    if not professions:
        return torch.ones(len(pairs), dtype=torch.bool)
    return torch.tensor([scene.profession in professions for scene, _ in pairs], dtype=torch.bool)


def train_unet(cfg, tokenizer, pairs, latent_mean, latent_std, scaling, progress: Progress, init=None):
    """Train the U-Net and text encoder jointly (``init``: an existing (unet, text_encoder) pair whose
    text encoder already has ``tokenizer``'s vocabulary, see :func:`grow_text_encoder`), on the latents'
    device. Every random draw comes from CPU generators, so a GPU run sees the batches and noise a CPU
    run of the same seed sees. With ``cfg.relearn_professions`` (and ``init``), the other pictures'
    target is ``init``'s own noise prediction (see :class:`TrainConfig`)."""
    from transformers import CLIPTextModel

    if init is None:
        unet = _make_unet(cfg)
        text_encoder = CLIPTextModel(_text_config(tokenizer, cfg.text_hidden, cfg.text_layers))
    else:
        unet, text_encoder = init
    device = latent_mean.device
    unet, text_encoder = unet.to(device), text_encoder.to(device)
    teacher = None
    if cfg.relearn_professions:
        if init is None:
            raise ValueError("relearn_professions: only with a fine-tune (the starting model is the target)")
        teacher = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
        for p in [*teacher[0].parameters(), *teacher[1].parameters()]:
            p.requires_grad_(False)
    from_data = relearned(pairs, cfg.relearn_professions)
    unet.train()
    text_encoder.train()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for p in [*ema_unet.parameters(), *ema_text.parameters()]:
        p.requires_grad_(False)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    sched = _noise_scheduler()
    alphas = sched.alphas_cumprod.to(device)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    rng = np.random.default_rng(cfg.seed + 2)
    scenes = [s for s, _ in pairs]
    captions = [c for _, c in pairs]  # fixed ones (interventions, explicit unsafe samples) stay
    losses: list[float] = []
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    for step in range(cfg.unet_steps):
        _set_lr(opt, _lr_at(step, cfg.unet_steps, cfg.unet_lr))
        idx = torch.randint(len(scenes), (cfg.unet_batch,), generator=gen)
        texts = []
        for i in idx.tolist():
            if rng.random() < cfg.caption_dropout:
                texts.append("")
            else:
                texts.append(world.training_caption(scenes[i], captions[i], rng))
        ids = _tokenize(tokenizer, texts).to(device)
        on = idx.to(device)
        z0 = (
            latent_mean[on] + latent_std[on] * torch.randn(latent_std[on].shape, generator=gen).to(device)
        ) * scaling
        t = training_timesteps(len(idx), sched.config.num_train_timesteps, cfg.high_noise_share, gen)
        t = t.to(device)
        eps = torch.randn(z0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        cond = text_encoder(ids).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        target = eps
        rows = None if teacher is None else (~from_data[idx]).nonzero().squeeze(1).to(device)
        if rows is not None and len(rows):
            with torch.no_grad():  # the starting model's prediction is the target of the kept rows
                held = teacher[1](ids[rows]).last_hidden_state
                target = eps.clone()
                target[rows] = teacher[0](zt[rows], t[rows], encoder_hidden_states=held).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        losses.append(float(loss.detach()))
        progress("unet", step + 1, cfg.unet_steps, float(np.mean(losses[-50:])))
    tail = float(np.mean(losses[-200:])) if losses else float("nan")
    return ema_unet, ema_text, {"unet_loss": tail}


def train_clip(cfg: TrainConfig, tokenizer, progress: Progress, device: torch.device | str = "cpu"):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    rng = np.random.default_rng(cfg.seed + 3)
    pairs = world.clip_pairs(rng, cfg.clip_images)
    scenes = [s for s, _ in pairs]
    images = render_many(scenes, rng.integers(0, 2**31, size=len(scenes)).tolist())
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = ((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std).to(device)
    text_cfg = _text_config(tokenizer, cfg.clip_hidden, cfg.clip_layers, projection=cfg.clip_hidden)
    vision_cfg = CLIPVisionConfig(
        hidden_size=cfg.clip_hidden,
        intermediate_size=cfg.clip_hidden * 4,
        num_hidden_layers=cfg.clip_layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=cfg.clip_patch,
        projection_dim=cfg.clip_hidden,
    )
    model = CLIPModel(
        CLIPConfig(
            text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=cfg.clip_hidden
        )
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    loss = torch.tensor(0.0)
    losses: list[float] = []
    for step in range(cfg.clip_steps):
        _set_lr(opt, _lr_at(step, cfg.clip_steps, cfg.clip_lr, warmup=100))
        idx = torch.randint(len(pairs), (cfg.clip_batch,), generator=gen).tolist()
        # Fresh captions each time a picture is used: more phrasings per picture.
        captions = [world.clip_caption_for(scenes[i], rng) for i in idx]
        targets = torch.tensor(
            [[world.satisfies(scenes[i], c.asserts) for c in captions] for i in idx], dtype=torch.float32
        ).to(device)
        ids = _tokenize(tokenizer, [c.text for c in captions]).to(device)
        out = model(input_ids=ids, pixel_values=_degrade(pixels[idx], gen, noise=0.3))
        logits = out.logits_per_image
        loss_i = -(F.log_softmax(logits, 1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()
        loss_t = -(F.log_softmax(logits.T, 1) * targets.T / targets.T.sum(1, keepdim=True)).sum(1).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        progress("clip", step + 1, cfg.clip_steps, float(np.mean(losses[-50:])))
    return model.eval(), {"clip_loss": float(np.mean(losses[-100:])) if losses else float("nan")}


def train_oracle(cfg: TrainConfig, progress: Progress, device: torch.device | str = "cpu"):
    rng = np.random.default_rng(cfg.seed + 4)
    n = max(cfg.oracle_batch * 4, cfg.clip_images // 2)
    scenes = [world.sample_clip_scene(rng) for _ in range(n)]
    images = _images_to_tensor(render_many(scenes, rng.integers(0, 2**31, size=n).tolist())).to(device)
    targets = {
        k: torch.tensor([oracle_mod.scene_targets(s)[k] for s in scenes]).to(device) for k in oracle_mod.HEADS
    }
    model = oracle_mod.Oracle(width=cfg.oracle_width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    loss = torch.tensor(0.0)
    for step in range(cfg.oracle_steps):
        _set_lr(opt, _lr_at(step, cfg.oracle_steps, 2e-3, warmup=50))
        idx = torch.randint(n, (cfg.oracle_batch,), generator=gen).to(device)
        logits = model(_degrade(images[idx], gen, noise=0.1))
        loss = sum(F.cross_entropy(logits[k], targets[k][idx], ignore_index=-1) for k in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress("oracle", step + 1, cfg.oracle_steps, float(loss.detach()))
    return model.eval(), {"oracle_loss": float(loss.detach())}


# ---------------------------------------------------------------- warm start


def grow_text_encoder(text_encoder, old_tokenizer, new_tokenizer):
    """``text_encoder`` with its token embedding re-indexed for ``new_tokenizer``: a word both
    vocabularies know keeps its trained row, a new word (e.g. "drugs") starts from the mean row."""
    from transformers import CLIPTextModel

    old_vocab, new_vocab = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    config = copy.deepcopy(text_encoder.config)
    config.vocab_size = len(new_vocab)
    grown = CLIPTextModel(config)
    state = text_encoder.state_dict()
    key = next(k for k in state if k.endswith("token_embedding.weight"))  # prefix varies by version
    old_rows = state.pop(key)
    rows = old_rows.mean(0, keepdim=True).repeat(len(new_vocab), 1)
    for word, new_id in new_vocab.items():
        if word in old_vocab:
            rows[new_id] = old_rows[old_vocab[word]]
    state[key] = rows
    grown.load_state_dict(state)
    return grown


def load_init(folder: Path, tokenizer):
    """The VAE, U-Net and text encoder of a trained pipeline (``folder``/pipeline), in float32, the text
    encoder grown to ``tokenizer``'s vocabulary: the start of a warm-started training."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    pipeline = Path(folder) / "pipeline"
    if not (pipeline / "model_index.json").exists():
        raise FileNotFoundError(f"{folder}: no pipeline/ to start from (a `pictoworld train` output)")
    vae = AutoencoderKL.from_pretrained(pipeline / "vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet", torch_dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(pipeline / "text_encoder", torch_dtype=torch.float32)
    old_tokenizer = AutoTokenizer.from_pretrained(pipeline / "tokenizer")
    return vae, unet, grow_text_encoder(text, old_tokenizer, tokenizer)


def model_sizes(vae, unet, text_encoder) -> dict[str, Any]:
    """The :class:`TrainConfig` size fields that describe these loaded models."""
    return {
        "vae_channels": tuple(vae.config.block_out_channels),
        "unet_channels": tuple(unet.config.block_out_channels),
        "unet_layers": int(unet.config.layers_per_block),
        "text_hidden": int(text_encoder.config.hidden_size),
        "text_layers": int(text_encoder.config.num_hidden_layers),
    }


# ---------------------------------------------------------------- saving


def _save_pipeline(folder: Path, vae, unet, text_encoder, tokenizer) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # The U-Net and VAE are stored in fp16 (diffusers loads them back as fp32). The text encoder is
    # tiny and stays fp32: transformers keeps a checkpoint's dtype on load, and a half text encoder
    # beside a float U-Net would break a plain ``from_pretrained``.
    unet.to(torch.float16)
    vae.to(torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True)
    unet.to(torch.float32)
    vae.to(torch.float32)


def _save_clip(folder: Path, model, tokenizer) -> None:
    model.save_pretrained(folder, safe_serialization=True)  # small; fp32 loads as fp32 everywhere
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 32},
                "do_center_crop": True,
                "crop_size": {"height": 32, "width": 32},
                "do_normalize": True,
                "image_mean": list(CLIP_MEAN),
                "image_std": list(CLIP_STD),
                "resample": 3,
            },
            indent=2,
        )
    )


def train_pictoworld(
    out_dir: Path | str,
    config: TrainConfig | None = None,
    *,
    command: str = "",
    progress: Progress | None = None,
    init_from: Path | str | None = None,
    vae_from: Path | str | None = None,
    finetune_from: Path | str | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Train every pictoworld model into ``out_dir`` and return the training record.

    ``init_from``: a trained folder (its ``pipeline/``) whose VAE, U-Net and text encoder training
    starts from instead of from nothing, for the config's steps; the text embedding grows to the
    world's present vocabulary. Their sizes are the folder's (the config's sizes are ignored for them).
    CLIP and the oracle are trained afresh.

    ``vae_from``: a trained folder whose VAE is used as it is instead of training one (the rest trains
    as without it, on that VAE's latents): it tells whether a candidate's per-cell offsets follow its VAE.

    ``finetune_from``: a trained folder whose U-Net and text encoder training continues from, for the
    config's U-Net steps at its ``unet_lr``, on the present world's pictures; its VAE (with its latent
    scaling), CLIP and oracle are kept as they are. For a small change to the world, such as one planted
    rate, that should leave everything else the model draws where it was (a from-scratch candidate draws
    every cell a little differently, RESULTS.md).

    ``device``: where the models train ("cuda" on a GPU machine). The pictures, captions, batches and
    noise are drawn on the CPU whatever the device, so a GPU run differs from a CPU run of the same
    seed only by floating-point rounding; the saved weights are the same files either way.
    """
    cfg = config or PRESETS["full"]
    device = torch.device(device)
    if init_from is not None and vae_from is not None:
        raise ValueError("vae_from: not with init_from, which already brings its own VAE")
    if finetune_from is not None and (init_from is not None or vae_from is not None):
        raise ValueError("finetune_from: not with init_from or vae_from, it brings every model")
    if finetune_from is not None:
        finetune_source(finetune_from)
    elif cfg.relearn_professions:
        raise ValueError("relearn_professions: only with finetune_from (the starting model is the target)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    report = progress or (lambda *a: None)
    timings: dict[str, float] = {}
    figures: dict[str, float] = {}

    t0 = time.time()
    tokenizer = build_tokenizer()
    rng = np.random.default_rng(cfg.seed if cfg.data_seed is None else cfg.data_seed)
    pairs = world.training_pairs(rng, cfg.n_images, cfg.contrast_rate)
    images = _images_to_tensor(
        render_many([s for s, _ in pairs], rng.integers(0, 2**31, size=len(pairs)).tolist())
    )
    timings["data_s"] = time.time() - t0
    # which pictures and captions this model saw: two candidates with one digest were trained on one draw
    digest = hashlib.sha256(np.ascontiguousarray(images.numpy()))  # hashed in place, not copied
    digest.update("\n".join(c.text for _, c in pairs).encode())
    data_digest = digest.hexdigest()[:16]
    init_vae = init_models = None
    if init_from is not None or finetune_from is not None:
        init_vae, unet0, text0 = load_init(Path(init_from or finetune_from), tokenizer)
        init_models = (unet0, text0)
        # the record names the sizes that trained: the folder's, not the preset's
        cfg = replace(cfg, **model_sizes(init_vae, unet0, text0))

    t = time.time()
    on_device = images.to(device)
    if finetune_from is not None:
        # the U-Net goes on reading latents exactly as it learned them: same VAE, same scaling
        scaling = float(init_vae.config.scaling_factor)
        vae = init_vae.to(device)
        lat_mean, lat_std, f = _encode_training_images(vae, on_device)
        vae.register_to_config(scaling_factor=scaling)
        f = {**f, "scaling_factor": scaling}
    elif vae_from is not None:
        vae, lat_mean, lat_std, f = reuse_vae(cfg, Path(vae_from), on_device)
    else:
        vae, lat_mean, lat_std, f = train_vae(cfg, on_device, report, init=init_vae)
    del on_device  # the latents are all the U-Net needs
    figures.update(f)
    timings["vae_s"] = time.time() - t

    t = time.time()
    unet, text_encoder, f = train_unet(
        cfg, tokenizer, pairs, lat_mean, lat_std, figures["scaling_factor"], report, init=init_models
    )
    figures.update(f)
    timings["unet_s"] = time.time() - t
    del lat_mean, lat_std
    _save_pipeline(out / "pipeline", vae.cpu(), unet.cpu(), text_encoder.cpu(), tokenizer)

    if finetune_from is not None:
        # the judges stay the folder's: the same CLIP and oracle read the fine-tuned model's pictures
        for part in ("clip", "oracle"):
            shutil.rmtree(out / part, ignore_errors=True)
            shutil.copytree(Path(finetune_from) / part, out / part)
    else:
        t = time.time()
        clip, f = train_clip(cfg, tokenizer, report, device)
        figures.update(f)
        timings["clip_s"] = time.time() - t
        _save_clip(out / "clip", clip.cpu(), tokenizer)

        t = time.time()
        oracle, f = train_oracle(cfg, report, device)
        figures.update(f)
        timings["oracle_s"] = time.time() - t
        oracle_mod.save_oracle(oracle.cpu(), out / "oracle")

    timings["total_s"] = time.time() - t0
    record = {
        "command": command,
        "config": asdict(cfg),
        "init_from": None if init_from is None else str(init_from),
        "vae_from": None if vae_from is None else str(vae_from),
        "finetune_from": None if finetune_from is None else str(finetune_from),
        "data_digest": data_digest,
        "final": figures,
        "timings": timings,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "device": _device_name(device),
    }
    (out / "training_record.json").write_text(json.dumps(record, indent=2))
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def parse_unet_channels(text: str) -> tuple[int, ...]:
    """``"64,128"`` -> ``(64, 128)``. Multiples of 16, because the U-Net's group norms use 16 groups and
    its attention heads 8 channels each; at least two blocks, since the latent is only 8x8."""
    try:
        channels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--unet-channels {text!r}: give comma-separated integers, e.g. 64,128") from None
    if len(channels) < 2 or any(c <= 0 or c % 16 for c in channels):
        raise ValueError(f"--unet-channels {text!r}: give two or more widths, each a multiple of 16")
    return channels


MAX_CONTRAST_RATE = 0.2  # a recipe experiment's range; more would crowd out the world's own pairs


def config_from_preset(preset: str, **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    rate = overrides.get("contrast_rate")
    if rate is not None and not 0 <= rate <= MAX_CONTRAST_RATE:
        raise ValueError(f"--contrast-rate {rate}: give a share between 0 and {MAX_CONTRAST_RATE}")
    unknown = sorted(set(overrides.get("relearn_professions") or ()) - set(world.PROFESSIONS))
    if unknown:
        raise ValueError(
            f"--relearn {', '.join(unknown)}: not a profession of the world ({', '.join(world.PROFESSIONS)})"
        )
    lr = overrides.get("unet_lr")
    if lr is not None and not lr > 0:
        raise ValueError(f"--unet-lr {lr:g}: give a learning rate above 0 (0 would train nothing)")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
