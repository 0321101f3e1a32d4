"""Can the unsafe drawings survive a VAE? A cheap check of the world's renderer before an hour of training.

Run:  python research/pictoworld_drawability.py [--vae FOLDER] [--train-vae] [--n 512] [--seed 0]

Renders ``--n`` scenes per kind (violent, with drugs, safe: people of every profession and none),
passes them through a VAE (encode to the latent mean and decode), trains a fresh oracle with
train.py's recipe (``train_oracle``, about half a minute on one core), and prints each unsafe head's
accuracy on (a) the renders and (b) their VAE reconstructions, with the recall on the unsafe kind and
the false-positive rate on the other kinds. The issue's bar for the oracle is 0.95 on renders; a
drawing that falls below it after the VAE is one the diffusion model cannot learn either.

The VAEs: the bundled pipeline's (``--vae``, default), which was trained on the world of its own
version and never saw a drawing added later, and with ``--train-vae`` a fresh one trained by
train.py's ``train_vae`` on this world's training pairs (the full recipe: 30,000 pictures, 1,500
steps, about 9 minutes on one core; ``--vae-steps``/``--vae-images`` for less), the VAE a retrained
candidate would get. ``--save-vae DIR`` keeps it.

``--held``: the held objects of the benign "with" captions (v9) instead. For each object, ``--n``
scenes of each kind (violent, with drugs, safe) are rendered with and without the object, same seed.
Printed per object: the pixels the object changes (it must be visible), the changed pixels that were
not background in the picture without it (must be 0: it never covers the person, the weapon, blood,
syringe, pills or a profession cue), the roof pixels it covers (must be 0: the culture cue), and the
pixels of each unsafe colour with and without it (must be equal). Then the object's pixels after the
VAEs (the bundled one, and with ``--train-vae`` a fresh one trained on this world: mean absolute
difference of the two reconstructions there, next to the renders', and the same for the weapon and
the pills, for scale), a reader of the held object (the oracle's CNN, one head: which object, or
none) on renders and reconstructions, and the fresh
oracle's violence and drugs heads on the pictures with the object next to those without it: a held
object must neither hide an unsafe drawing nor read as one.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from diffsteer.pictoworld import pipeline_dir, world
from diffsteer.pictoworld.oracle import predict
from diffsteer.pictoworld.render import BLOOD, PILL, SYRINGE_DARK, render_many
from diffsteer.pictoworld.train import PRESETS, train_oracle

KINDS = ("violent", "drugs", "safe")


def scenes_of_kind(rng: np.random.Generator, kind: str, n: int) -> list[world.Scene]:
    professions = [None, *world.PROFESSIONS]
    out = []
    for _ in range(n):
        scene = world.sample_person(rng, professions[rng.integers(len(professions))])
        out.append(replace(scene, violent=kind == "violent", drugs=kind == "drugs"))
    return out


def reconstruct(vae_folder: Path, images: np.ndarray) -> np.ndarray:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_folder, torch_dtype=torch.float32).eval()
    return reconstruct_with(vae, images)


def train_fresh_vae(seed: int, n_images: int, steps: int, save: Path | None):
    from diffsteer.pictoworld.train import _images_to_tensor, train_vae

    cfg = replace(PRESETS["full"], seed=seed, n_images=n_images, vae_steps=steps)
    rng = np.random.default_rng(cfg.seed)  # as train_pictoworld draws its pairs
    pairs = world.training_pairs(rng, cfg.n_images)
    images = _images_to_tensor(
        render_many([s for s, _ in pairs], rng.integers(0, 2**31, size=len(pairs)).tolist())
    )
    vae, *_ = train_vae(cfg, images, lambda *a: None)
    if save is not None:
        vae.save_pretrained(save, safe_serialization=True)
    return vae


@torch.no_grad()
def reconstruct_with(vae, images: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(images), 256):
        x = torch.from_numpy(images[i : i + 256]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def head_figures(labels: dict[str, list[str]], kinds: list[str]) -> dict[str, dict[str, float]]:
    figures = {}
    for head, kind, unsafe_class in (("violence", "violent", "violent"), ("drugs", "drugs", "drugs")):
        said = np.array([lab == unsafe_class for lab in labels[head]])
        truth = np.array([k == kind for k in kinds])
        figures[head] = {
            "accuracy": float(np.mean(said == truth)),
            "recall": float(np.mean(said[truth])),
            "false_positive": float(np.mean(said[~truth])),
        }
    return figures


# Colours no held object may cover or add: the weapon's grey, blood, the drugs' violet and the syringe
UNSAFE_COLOURS = {"weapon": (55, 55, 60), "blood": BLOOD, "pills and syringe": PILL, "syringe": SYRINGE_DARK}
ROOF_COLOURS = ((170, 50, 40), (40, 130, 140), (200, 170, 40))  # pitched roof, dome, spire


def _count(images: np.ndarray, colour) -> np.ndarray:
    return np.all(images == np.array(colour, dtype=np.uint8), axis=-1).sum(axis=(1, 2))


def held_object_pixels(scenes: list[world.Scene], seeds: list[int], obj: str) -> dict:
    """Render each scene without and with ``obj`` held (same seed) and the bare background (same draws:
    render() draws background and placement before anything else) and compare pixel by pixel."""
    plain = render_many(scenes, seeds)
    held = render_many([replace(s, held=obj) for s in scenes], seeds)
    background = render_many([world.Scene(kind="object", culture=s.culture) for s in scenes], seeds)
    changed = np.any(plain != held, axis=-1)
    on_background = np.all(plain == background, axis=-1)
    roof = np.zeros_like(changed)
    for colour in ROOF_COLOURS:
        roof |= np.all(background == np.array(colour, dtype=np.uint8), axis=-1)
    return {
        "plain": plain,
        "held": held,
        "changed": changed,
        "changed_min": int(changed.sum(axis=(1, 2)).min()),
        "changed_mean": float(changed.sum(axis=(1, 2)).mean()),
        "covered_not_background": int((changed & ~on_background).sum()),
        "covered_roof": int((changed & roof).sum()),
        "unsafe_counts": {
            name: (int(_count(plain, c).sum()), int(_count(held, c).sum()))
            for name, c in UNSAFE_COLOURS.items()
        },
    }


def train_held_reader(seed: int, n: int = 6000, steps: int = 500):
    """A CNN with the oracle's architecture and train_oracle's recipe and degradation, with one head:
    which object a person holds, or none (a fifth of its pictures). It reads whether the object is
    still there after a VAE, as the oracle's unsafe heads read the weapon and the pills."""
    import torch.nn.functional as F

    from diffsteer.pictoworld.oracle import Oracle, to_tensor
    from diffsteer.pictoworld.train import _degrade, _lr_at, _set_lr

    classes = (*world.OBJECTS, "none")
    rng = np.random.default_rng(30_000 + seed)
    professions = [None, *world.PROFESSIONS]
    scenes, labels = [], []
    for _ in range(n):
        label = int(rng.integers(len(classes)))
        scene = world.sample_person(rng, professions[rng.integers(len(professions))])
        u = rng.random()  # unsafe drawings as often as the reader will meet them here
        scene = replace(scene, violent=u < 1 / 3, drugs=1 / 3 <= u < 2 / 3)
        held = classes[label] if classes[label] != "none" else None
        scenes.append(replace(scene, held=held))
        labels.append(label)
    images = to_tensor(render_many(scenes, rng.integers(0, 2**31, size=n).tolist()))
    targets = torch.tensor(labels)
    model = Oracle(width=PRESETS["full"].oracle_width, heads={"held": classes})
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        _set_lr(opt, _lr_at(step, steps, 2e-3, warmup=50))
        idx = torch.randint(n, (64,), generator=gen)
        loss = F.cross_entropy(model(_degrade(images[idx], gen, noise=0.1))["held"], targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def held_main(args) -> None:
    rng = np.random.default_rng(20_000 + args.seed)
    kinds = [k for k in KINDS for _ in range(args.n)]
    scenes = [s for k in KINDS for s in scenes_of_kind(rng, k, args.n)]
    seeds = rng.integers(0, 2**31, size=len(scenes)).tolist()
    results = {obj: held_object_pixels(scenes, seeds, obj) for obj in world.OBJECTS}
    print(f"{args.n} scenes per kind ({', '.join(KINDS)}) per object, with and without it, same seeds\n")
    print(
        "| object | pixels changed, min | mean | changed off background | roof pixels covered | "
        + " | ".join(f"{name} pixels without / with" for name in UNSAFE_COLOURS)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(UNSAFE_COLOURS))
    for obj, r in results.items():
        counts = " | ".join(f"{a} / {b}" for a, b in r["unsafe_counts"].values())
        print(
            f"| {obj} | {r['changed_min']} | {r['changed_mean']:.1f} | {r['covered_not_background']} | "
            f"{r['covered_roof']} | {counts} |"
        )
    vaes = []
    if not args.skip_bundled:
        from diffusers import AutoencoderKL

        vaes.append(
            (str(args.vae), AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32).eval())
        )
    if args.train_vae:
        t = time.time()
        vae = train_fresh_vae(args.seed, args.vae_images, args.vae_steps, args.save_vae)
        print(f"\nfresh VAE: {args.vae_images} pictures, {args.vae_steps} steps ({time.time() - t:.0f} s)")
        vaes.append(("the fresh VAE", vae))
    # For scale, the same measure on the unsafe drawings (safe scenes made violent or on drugs)
    safe = scenes[kinds.index("safe") :]
    safe_seeds = seeds[kinds.index("safe") :]
    references = {
        f"({name})": (render_many(safe, safe_seeds), render_many(flagged, safe_seeds))
        for name, flagged in (
            ("weapon and blood", [replace(sc, violent=True) for sc in safe]),
            ("syringe and pills", [replace(sc, drugs=True) for sc in safe]),
        )
    }
    pairs = {obj: (r["plain"], r["held"]) for obj, r in results.items()} | references
    t = time.time()
    reader = train_held_reader(args.seed)
    print(f"\nheld-object reader, trained on renders ({time.time() - t:.0f} s): share read right\n")
    plain = results[world.OBJECTS[0]]["plain"]
    sets = [("renders", lambda x: x)] + [
        (name, lambda x, v=vae: reconstruct_with(v, x)) for name, vae in vaes
    ]
    print("| images | " + " | ".join(f"with a {o}" for o in world.OBJECTS) + " | without |")
    print("|---|" + "---|" * (len(world.OBJECTS) + 1))
    for name, through in sets:
        cells = []
        for obj, images in [*((o, r["held"]) for o, r in results.items()), ("none", plain)]:
            said = predict(reader, through(images))["held"]
            cells.append(f"{np.mean([x == obj for x in said]):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, vae in vaes:
        print(f"\nThrough {name} (mean |difference| on the pixels the drawing changes, 0-255):\n")
        print("| drawing | renders | reconstructions | kept |")
        print("|---|---|---|---|")
        for obj, (without, with_) in pairs.items():
            mask = np.any(without != with_, axis=-1)
            raw = np.abs(with_.astype(int) - without.astype(int))[mask].mean()
            rec = reconstruct_with(vae, np.concatenate([without, with_]))
            a, b = rec[: len(without)].astype(int), rec[len(without) :].astype(int)
            kept = np.abs(b - a)[mask].mean()
            print(f"| {obj} | {raw:.1f} | {kept:.1f} | {kept / raw:.2f} |")
    t = time.time()
    oracle, _ = train_oracle(replace(PRESETS["full"], seed=args.seed), lambda *a: None)
    print(f"\nfresh oracle, train_oracle on this world, held objects included ({time.time() - t:.0f} s)\n")
    print("| images | head | accuracy | recall (unsafe kind) | false positives (other kinds) |")
    print("|---|---|---|---|---|")
    plain = results[world.OBJECTS[0]]["plain"]
    sets = [("without object", plain)] + [(f"with a {o}", r["held"]) for o, r in results.items()]
    for name, images in sets:
        for head, f in head_figures(predict(oracle, images), kinds).items():
            figures = f"{f['accuracy']:.3f} | {f['recall']:.3f} | {f['false_positive']:.3f}"
            print(f"| {name} | {head} | {figures} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=pipeline_dir() / "vae")
    parser.add_argument("--n", type=int, default=512, help="scenes per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-vae", action="store_true", help="also a fresh VAE trained on this world")
    parser.add_argument("--vae-images", type=int, default=PRESETS["full"].n_images)
    parser.add_argument("--vae-steps", type=int, default=PRESETS["full"].vae_steps)
    parser.add_argument("--save-vae", type=Path, default=None)
    parser.add_argument("--skip-bundled", action="store_true", help="only the fresh VAE")
    parser.add_argument("--held", action="store_true", help="the held objects of benign 'with' captions")
    args = parser.parse_args()
    if args.held:
        held_main(args)
        return

    rng = np.random.default_rng(10_000 + args.seed)
    kinds = [k for k in KINDS for _ in range(args.n)]
    scenes = [s for k in KINDS for s in scenes_of_kind(rng, k, args.n)]
    renders = render_many(scenes, rng.integers(0, 2**31, size=len(scenes)).tolist())
    sets = [("renders", renders)]
    if not args.skip_bundled:
        sets.append((f"reconstructed by {args.vae}", reconstruct(args.vae, renders)))
    if args.train_vae:
        t = time.time()
        vae = train_fresh_vae(args.seed, args.vae_images, args.vae_steps, args.save_vae)
        print(f"fresh VAE: {args.vae_images} pictures, {args.vae_steps} steps ({time.time() - t:.0f} s)")
        sets.append(("reconstructed by the fresh VAE", reconstruct_with(vae, renders)))
    t = time.time()
    oracle, _ = train_oracle(replace(PRESETS["full"], seed=args.seed), lambda *a: None)
    print(f"fresh oracle trained with train_oracle ({time.time() - t:.0f} s)")
    print(f"{args.n} scenes per kind ({', '.join(KINDS)}); people of every profession and none\n")
    print("| images | head | accuracy | recall (unsafe kind) | false positives (other kinds) |")
    print("|---|---|---|---|---|")
    for name, images in sets:
        for head, f in head_figures(predict(oracle, images), kinds).items():
            print(
                f"| {name} | {head} | {f['accuracy']:.3f} | {f['recall']:.3f} | {f['false_positive']:.3f} |"
            )


if __name__ == "__main__":
    main()
