"""The oracle: a small supervised CNN that reads a pictoworld picture's true attributes.

It is trained on renders, where the labels are known, and is independent of the CLIP model: it
checks both what the diffusion model drew and what the zero-shot classifier said.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffsteer.pictoworld.world import CULTURES, GENDERS, OBJECTS, PROFESSIONS, SKIN_TONES, Scene

UNCERTAIN = "uncertain"
NONE = "none"
HEADS: dict[str, tuple[str, ...]] = {
    "kind": ("person", "object"),
    "gender": (*GENDERS, UNCERTAIN),
    "skin_tone": (*SKIN_TONES, UNCERTAIN),
    "culture": CULTURES,
    "profession": (*PROFESSIONS, NONE),
    "violence": ("violent", "peaceful"),
    "drugs": ("drugs", "drug-free"),  # v9; an oracle saved before (v8) has no such head
    "object": (*OBJECTS, NONE),
}


def scene_targets(scene: Scene) -> dict[str, int]:
    """The class index of each head for a scene; -1 where the head does not apply (ignored in the loss)."""
    person = scene.kind == "person"
    return {
        "kind": 0 if person else 1,
        "gender": HEADS["gender"].index(scene.gender or UNCERTAIN) if person else -1,
        "skin_tone": HEADS["skin_tone"].index(scene.skin or UNCERTAIN) if person else -1,
        "culture": HEADS["culture"].index(scene.culture),
        "profession": HEADS["profession"].index(scene.profession or NONE) if person else -1,
        "violence": (0 if scene.violent else 1) if person else -1,
        "drugs": (0 if scene.drugs else 1) if person else -1,
        "object": HEADS["object"].index(scene.obj or NONE),
    }


class Oracle(nn.Module):
    """The CNN. ``heads``: {head: classes}; by default every head of the current world (``HEADS``),
    when loaded, the heads its config.json saved (an oracle trained on an older world has fewer)."""

    def __init__(self, width: int = 32, heads: dict[str, tuple[str, ...]] | None = None):
        super().__init__()
        w = width
        self.head_classes = {k: tuple(v) for k, v in (heads or HEADS).items()}

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.features = nn.Sequential(
            block(3, w),
            block(w, w),
            nn.MaxPool2d(2),
            block(w, 2 * w),
            block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(16 * w, len(v)) for k, v in self.head_classes.items()})
        self.width = width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {k: head(h) for k, head in self.heads.items()}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def save_oracle(model: Oracle, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    save_file(state, str(folder / "model.safetensors"))
    config = {"width": model.width, "heads": model.head_classes}
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def load_oracle(folder: Path) -> Oracle:
    """The oracle saved in ``folder``, with the heads it was trained with (config.json)."""
    config = json.loads(Path(folder, "config.json").read_text())
    model = Oracle(width=config["width"], heads=config.get("heads"))
    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


@torch.inference_mode()
def predict(model: Oracle, images: np.ndarray, batch_size: int = 512) -> dict[str, list[str]]:
    """Label every image on every head the oracle has: {"gender": ["man", ...], ...}.

    An oracle without a head (the v8 oracle has no ``drugs``) leaves it out of the answer.
    """
    out: dict[str, list[str]] = {k: [] for k in model.head_classes}
    for i in range(0, len(images), batch_size):
        logits = model(to_tensor(images[i : i + batch_size]))
        for k, v in logits.items():
            out[k].extend(model.head_classes[k][j] for j in v.argmax(-1).tolist())
    return out
