"""Small, randomly initialised pipelines and CLIP models built from config, for tests and examples.

No weights are downloaded: each builder makes the same architecture family as a real checkpoint
(SD 1.x, SD 2.x with v-prediction, SDXL, CLIP) at a size that runs in well under a second on a CPU.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
)

from diffsteer.tokenizer import EOS_ID, build_word_tokenizer

TEST_VOCABULARY = [
    "a photo of a person who looks like a man woman with uncertain gender light dark skin color",
    "an object doctor nurse pilot chef lawyer if all individuals can be irrespective their",
    "in western non-western setting culture male female wearing scarf",
]


def _text_config(hidden: int = 32, projection: int = 32, vocab_size: int = 128) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


# the U-Net shape every tiny pipeline shares; each kind adds its own attention settings
_TINY_UNET = dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)


def tiny_tokenizer():
    return build_word_tokenizer(TEST_VOCABULARY, max_length=32)


def tiny_sd_pipeline(kind: str = "sd1", seed: int = 0):
    """A tiny text-to-image pipeline: ``sd1`` (epsilon), ``sd2`` (v-prediction) or ``sdxl``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    if kind == "sdxl":
        unet = UNet2DConditionModel(
            **_TINY_UNET,
            attention_head_dim=(2, 4),
            norm_num_groups=8,
            cross_attention_dim=64,
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading"
        )
        text_encoder = CLIPTextModel(_text_config(hidden=32))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden=32, projection=32))
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tiny_tokenizer(),
            unet=unet,
            scheduler=scheduler,
        )
    unet = UNet2DConditionModel(
        **_TINY_UNET,
        attention_head_dim=4 if kind == "sd1" else (2, 4),
        norm_num_groups=8,
        cross_attention_dim=32,
        use_linear_projection=kind == "sd2",
    )
    prediction = "v_prediction" if kind == "sd2" else "epsilon"
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type=prediction,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_pipeline_without_mid_block(base, seed: int = 1):
    """A tiny SD1 ``base`` whose U-Net has no mid block (steering uses the deepest down block)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_TINY_UNET,
        mid_block_type=None,
        attention_head_dim=4,
        norm_num_groups=8,
        cross_attention_dim=32,
    )
    pipe = StableDiffusionPipeline(**{**base.components, "unet": unet})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip(seed: int = 0, image_size: int = 32) -> tuple[CLIPModel, object]:
    """A tiny random CLIPModel and its word-level tokenizer."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_text_config(hidden=32, projection=16).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=8,
            projection_dim=16,
        ).to_dict(),
        projection_dim=16,
    )
    return CLIPModel(config), tiny_tokenizer()
