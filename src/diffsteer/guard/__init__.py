"""A prompt guard that reads what the model will see (GuardT2I-style generative moderation).

``train_guard`` fits a decoder that writes a pipeline's conditional text embeddings back as a
sentence; ``PromptGuard`` decodes a prompt's embedding and judges the sentence, blocking prompts whose
meaning to the model is unsafe even when their words are not. See docs/guard.md.
"""

from diffsteer.guard.guard import GuardSetup, GuardVerdict, PromptBlockedError, PromptGuard, word_similarity
from diffsteer.guard.guard_file import GuardFileError, GuardMismatchError
from diffsteer.guard.train import GuardTrainingResult, train_guard

__all__ = [
    "GuardFileError",
    "GuardMismatchError",
    "GuardSetup",
    "GuardTrainingResult",
    "GuardVerdict",
    "PromptBlockedError",
    "PromptGuard",
    "train_guard",
    "word_similarity",
]
