"""The word-level tokenizer of the models diffsteer trains from scratch."""

from __future__ import annotations

from transformers import AutoTokenizer

from diffsteer.tokenizer import UNK, build_word_tokenizer

TEXTS = ["a photo of a person in a non-western setting", "a photo of a person in a western setting"]


def test_hyphenated_words_are_one_token_and_survive_a_save(tmp_path):
    tok = build_word_tokenizer(TEXTS, hyphenated_words=True)
    words = tok.tokenize("A photo in a Non-Western setting")
    assert words == ["a", "photo", "in", "a", "non-western", "setting"]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("a non-western setting").input_ids == tok("a non-western setting").input_ids
    # "non" alone was never a word of the vocabulary: it is unknown, not silently "western"
    assert loaded.tokenize("non western") == [UNK, "western"]


def test_words_split_at_hyphens_by_default():
    tok = build_word_tokenizer(TEXTS)
    assert tok.tokenize("a non-western setting") == ["a", "non", "-", "western", "setting"]
