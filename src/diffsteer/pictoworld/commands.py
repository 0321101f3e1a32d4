"""``diffsteer pictoworld ...``: the commands of the bundled world, added to the CLI by the plugin."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="The bundled synthetic world and its models.")


@app.command("train")
def train(
    out: Path = typer.Option(
        Path("runs/pictoworld"), help="Folder for pipeline/, clip/, oracle/ and the record."
    ),
    preset: str = typer.Option("full", help="full (the bundled model) | smoke (seconds, for tests)."),
    seed: int = typer.Option(0, min=0),
    data_seed: int | None = typer.Option(
        None,
        "--data-seed",
        min=0,
        help="Draw the training pairs from this seed instead of --seed, which keeps the initialisation, "
        "batch order and noise (a recipe experiment: do a candidate's offsets follow its data?).",
    ),
    unet_steps: int | None = typer.Option(
        None,
        "--unet-steps",
        min=1,
        help="U-Net training steps instead of the preset's (a recipe experiment).",
    ),
    n_images: int | None = typer.Option(
        None,
        "--n-images",
        min=1,
        help="Diffusion training pairs instead of the preset's (a recipe experiment).",
    ),
    unet_channels: str | None = typer.Option(
        None,
        "--unet-channels",
        help="U-Net block widths instead of the preset's, comma-separated, e.g. 64,128 (a recipe "
        "experiment; each a multiple of 16).",
    ),
    contrast_rate: float | None = typer.Option(
        None,
        "--contrast-rate",
        help="Share of training pairs showing a planted combination's profession in its other setting, "
        "under that setting's caption (a recipe experiment; default 0).",
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        help="A trained folder (pipeline/) to start the VAE, U-Net and text encoder from; new words of the "
        "world get fresh embeddings. CLIP and the oracle are trained afresh.",
    ),
    vae_from: Path | None = typer.Option(
        None,
        "--vae-from",
        help="A trained folder whose VAE (pipeline/vae) is used as it is instead of training one (a recipe "
        "experiment: do a candidate's offsets follow its VAE?).",
    ),
    finetune_from: Path | None = typer.Option(
        None,
        "--finetune-from",
        help="A trained folder whose U-Net and text encoder go on training (--unet-steps at --unet-lr) on "
        "the present world; its VAE, CLIP and oracle are kept. For a small change to the world.",
    ),
    relearn: list[str] = typer.Option(
        [],
        "--relearn",
        help="With --finetune-from (repeatable): pictures of this profession train on the world's images; "
        "every other picture trains toward the starting model's own prediction, so what the world change "
        "leaves alone stays where that model drew it.",
    ),
    unet_lr: float | None = typer.Option(
        None, "--unet-lr", help="The U-Net's peak learning rate instead of the preset's."
    ),
    device: str = typer.Option(
        "cpu", help="Where to train: cpu, cuda or cuda:N. The same seed draws the same batches and noise."
    ),
) -> None:
    """Train the pictoworld models from scratch, or warm-started with --init-from (about 50 minutes on 2
    CPU cores with the full preset)."""
    # the CLI's own error line and progress bar, so this command looks like every other one
    from diffsteer.cli import _fail, _progress_bar
    from diffsteer.models import DeviceUnavailableError, check_device
    from diffsteer.pictoworld.train import (
        config_from_preset,
        finetune_source,
        parse_unet_channels,
        train_pictoworld,
        vae_source,
    )

    try:
        check_device(device)
        channels = None if unet_channels is None else parse_unet_channels(unet_channels)
        cfg = config_from_preset(
            preset, seed=seed, unet_steps=unet_steps, n_images=n_images, unet_channels=channels,
            data_seed=data_seed, contrast_rate=contrast_rate, unet_lr=unet_lr,
            relearn_professions=tuple(dict.fromkeys(relearn)) or None,
        )  # fmt: skip
    except (ValueError, DeviceUnavailableError) as exc:
        _fail(exc)
    if init_from is not None and unet_channels is not None:
        # a warm start keeps the folder's U-Net, so the widths would be recorded but not used
        _fail(ValueError("--unet-channels: not with --init-from, whose U-Net keeps its own widths"))
    if init_from is not None and not (init_from / "pipeline" / "model_index.json").exists():
        _fail(ValueError(f"--init-from {init_from}: no pipeline/ there (a `pictoworld train` output)"))
    if vae_from is not None and init_from is not None:
        _fail(ValueError("--vae-from: not with --init-from, which already brings its own VAE"))
    if finetune_from is not None and (init_from is not None or vae_from is not None or unet_channels):
        _fail(ValueError("--finetune-from: not with --init-from, --vae-from or --unet-channels"))
    if relearn and finetune_from is None:
        _fail(ValueError("--relearn: only with --finetune-from, whose model is what the others keep"))
    try:
        if vae_from is not None:
            vae_source(vae_from, "--vae-from")
        if finetune_from is not None:
            finetune_source(finetune_from, "--finetune-from")
    except ValueError as exc:
        _fail(exc)
    with _progress_bar(with_loss=True) as update:
        record = train_pictoworld(
            out,
            cfg,
            command=shlex.join(["diffsteer", *sys.argv[1:]]),
            progress=update,
            init_from=init_from,
            vae_from=vae_from,
            finetune_from=finetune_from,
            device=device,
        )
    print(f"trained in {record['timings']['total_s']:.0f}s -> {out}")
