"""A small language model that writes the text guidance back as a sentence (GuardT2I's interpreter).

A GPT-2 decoder built from a config (no pretrained weights) with cross-attention on the conditional
embedding sequence: each token embedding, projected to the decoder's width, is one memory slot, and on
SDXL the pooled embedding is one more slot in front. Its vocabulary is the generator's own tokenizer,
so anything the prompt could say, the decoder can write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from diffsteer.guard.embeddings import TextConditions

__all__ = ["CaptionDecoder", "DecoderShape"]


@dataclass(frozen=True)
class DecoderShape:
    """Everything needed to rebuild a decoder before loading its weights (stored in the guard file)."""

    token_dim: int
    pooled_dim: int  # 0: the pipeline has no pooled embedding
    memory_length: int  # the text encoder's sequence length
    vocab_size: int
    max_length: int  # the tokenizer's, BOS and EOS included
    bos_id: int
    eos_id: int
    width: int = 128
    layers: int = 2
    heads: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CaptionDecoder(nn.Module):
    """Reads :class:`TextConditions` and predicts the prompt's token ids, one after another."""

    def __init__(self, shape: DecoderShape) -> None:
        super().__init__()
        self.shape = shape
        self.memory = nn.Sequential(nn.LayerNorm(shape.token_dim), nn.Linear(shape.token_dim, shape.width))
        self.pooled = (
            nn.Sequential(nn.LayerNorm(shape.pooled_dim), nn.Linear(shape.pooled_dim, shape.width))
            if shape.pooled_dim
            else None
        )
        slots = shape.memory_length + (1 if shape.pooled_dim else 0)
        self.memory_position = nn.Parameter(torch.zeros(slots, shape.width))
        self.lm = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=shape.vocab_size,
                n_positions=shape.max_length,
                n_embd=shape.width,
                n_layer=shape.layers,
                n_head=shape.heads,
                n_inner=shape.width * 4,
                add_cross_attention=True,
                bos_token_id=shape.bos_id,
                eos_token_id=shape.eos_id,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
            )
        )

    def encode_memory(self, cond: TextConditions) -> torch.Tensor:
        """The cross-attention memory ``(B, slots, width)``."""
        memory = self.memory(cond.tokens)
        if self.pooled is not None:
            if cond.pooled is None:
                raise ValueError("this decoder reads a pooled embedding, but none was given")
            memory = torch.cat([self.pooled(cond.pooled).unsqueeze(1), memory], dim=1)
        if memory.shape[1] != self.memory_position.shape[0]:
            raise ValueError(
                f"the embeddings hold {memory.shape[1]} slots, the decoder was built for "
                f"{self.memory_position.shape[0]}"
            )
        return memory + self.memory_position

    def loss(
        self,
        cond: TextConditions,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy of the prompts' ids (BOS ... EOS) given their embeddings.

        ``targets``: the ids to predict when ``input_ids`` were corrupted on purpose (default: the inputs).
        """
        targets = input_ids if targets is None else targets
        logits = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=self.encode_memory(cond),
            use_cache=False,
        ).logits
        # token t predicts token t+1; padding after the end token is not a target
        targets = targets[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        return nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
        )

    @torch.inference_mode()
    def generate(self, cond: TextConditions) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy decoding: the token ids of each sentence (without BOS and EOS), and for each the
        lowest probability the decoder gave one of its chosen tokens (how sure it was of the reading)."""
        memory = self.encode_memory(cond)
        n = memory.shape[0]
        ids = torch.full((n, 1), self.shape.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(n, dtype=torch.bool, device=memory.device)
        least = torch.ones(n, device=memory.device)
        for _ in range(self.shape.max_length - 1):
            logits = self.lm(input_ids=ids, encoder_hidden_states=memory, use_cache=False).logits[:, -1]
            probs = logits.float().softmax(-1)
            p, nxt = probs.max(-1)
            least = torch.where(done, least, torch.minimum(least, p))
            nxt = torch.where(done, torch.full_like(nxt, self.shape.eos_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == self.shape.eos_id
            if bool(done.all()):
                break
        sentences = []
        for row in ids[:, 1:].tolist():
            sentences.append(row[: row.index(self.shape.eos_id)] if self.shape.eos_id in row else row)
        return sentences, least.cpu()
