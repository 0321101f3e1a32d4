"""The text guidance a pipeline's U-Net sees: the conditional embeddings of its own text encoder(s).

The guard reads exactly what generation feeds the U-Net, computed by the pipeline's own
``encode_prompt``: on SD 1.x/2.x the last hidden states of its text encoder ``(seq, dim)``; on SDXL
both encoders' hidden states side by side ``(seq, dim_1 + dim_2)`` and the second encoder's pooled
embedding ``(pooled_dim,)``. A guard file is bound to the text encoder(s) it was trained on by
:func:`text_encoder_fingerprint`, the way steering files are bound to their U-Net.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TextConditions", "encode_conditions", "text_encoder_fingerprint"]


@dataclass
class TextConditions:
    """Conditional embeddings of a batch of prompts: ``tokens (B, seq, dim)``, ``pooled (B, p)`` or None."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None

    @property
    def token_dim(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def pooled_dim(self) -> int:
        return 0 if self.pooled is None else int(self.pooled.shape[-1])

    def __getitem__(self, index: Any) -> TextConditions:
        return TextConditions(self.tokens[index], None if self.pooled is None else self.pooled[index])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _device(pipe: Any) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.device


@torch.inference_mode()
def encode_conditions(pipe: Any, prompts: Sequence[str], batch_size: int = 256) -> TextConditions:
    """The conditional embeddings generation would use for ``prompts``, in float32 on the CPU."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    tokens, pooled = [], []
    for i in range(0, len(prompts), batch_size):
        encoded = pipe.encode_prompt(
            prompt=prompts[i : i + batch_size],
            device=_device(pipe),
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        tokens.append(encoded[0].detach().to("cpu", torch.float32))
        if len(encoded) == 4:  # SDXL: (embeds, negative, pooled, negative pooled)
            pooled.append(encoded[2].detach().to("cpu", torch.float32))
    return TextConditions(torch.cat(tokens), torch.cat(pooled) if pooled else None)


def text_encoder_fingerprint(pipe: Any) -> str:
    """Hash of the text encoder(s) and tokenizer(s): architecture, a sample of every weight, vocabulary.

    A decoder trained to read one encoder's embeddings reads another's as noise, so the weights count,
    not only the architecture (a fine-tuned encoder of the same shape is another encoder).
    """
    digest = hashlib.sha256()
    for part in ("text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is None:
            continue
        config = {k: v for k, v in module.config.to_dict().items() if not k.startswith("_")}
        config.pop("transformers_version", None)
        config.pop("dtype", None)
        config.pop("torch_dtype", None)
        digest.update(f"{part}:{json.dumps(config, sort_keys=True, default=str)}".encode())
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().flatten()
            idx = torch.linspace(0, flat.numel() - 1, steps=min(64, flat.numel())).long().to(flat.device)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            # as float16, so a half-precision copy of the same encoder keeps its fingerprint
            digest.update(flat[idx].cpu().to(torch.float16).numpy().tobytes())
    for part in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, part, None)
        if tok is not None:
            digest.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    return digest.hexdigest()[:16]
