"""A word-level tokenizer in the Hugging Face format, for small models trained from scratch.

Real Stable Diffusion checkpoints ship CLIP's byte-pair tokenizer; the bundled pictoworld model and
the tiny test models have a small closed vocabulary instead, so every word is one token. Saved with
``save_pretrained`` it loads back through ``AutoTokenizer`` and inside a diffusers pipeline folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2

_WORD = r"\w+|[^\w\s]+"
_HYPHENATED_WORD = r"\w+(?:-\w+)*|[^\w\s]+"


def split_words(text: str, hyphenated_words: bool = False) -> list[str]:
    """Split text the way the tokenizer does (lower-cased words and punctuation runs)."""
    return re.findall(_HYPHENATED_WORD if hyphenated_words else _WORD, text.lower())


def build_word_tokenizer(
    texts: Iterable[str], max_length: int = 32, hyphenated_words: bool = False
) -> PreTrainedTokenizerFast:
    """Build a tokenizer whose vocabulary is every word found in ``texts`` (sorted, so stable).

    ``hyphenated_words`` keeps "non-western" one token instead of "non", "-", "western". A small text
    encoder trained from scratch then need not learn that "non" before "western" negates it: the
    pictoworld v5 candidate's encoder mapped "in a non-western setting" almost onto no setting at all.
    """
    words = sorted({w for t in texts for w in split_words(t, hyphenated_words)})
    vocab = {BOS: BOS_ID, EOS: EOS_ID, UNK: UNK_ID}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    if hyphenated_words:
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_HYPHENATED_WORD), "isolated")]
        )
    else:
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
