"""A word-level tokenizer in the Hugging Face format, for small models trained from scratch.

Real Stable Diffusion checkpoints ship CLIP's byte-pair tokenizer; the bundled pictoworld model and
the tiny test models have a small closed vocabulary instead, so every word is one token. Saved with
``save_pretrained`` it loads back through ``AutoTokenizer`` and inside a diffusers pipeline folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2

_WORD = re.compile(r"\w+|[^\w\s]+")


def split_words(text: str) -> list[str]:
    """Split text the way the tokenizer does (lower-cased words and punctuation runs)."""
    return _WORD.findall(text.lower())


def build_word_tokenizer(texts: Iterable[str], max_length: int = 32) -> PreTrainedTokenizerFast:
    """Build a tokenizer whose vocabulary is every word found in ``texts`` (sorted, so stable)."""
    words = sorted({w for t in texts for w in split_words(t)})
    vocab = {BOS: BOS_ID, EOS: EOS_ID, UNK: UNK_ID}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,  # CLIP pads with its end token; the text model pools at the first one
        model_max_length=max_length,
    )
