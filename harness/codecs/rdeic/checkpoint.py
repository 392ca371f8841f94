"""RDEIC's weight files: the official pair and our merged ``.safetensors``, described for
:mod:`harness.codecs.checkpoints` (which reads and checks every codec's files), and merged for a strict load.

The official inference merges two files: the SD 2.1 checkpoint ``v2-1_512-ema-pruned.ckpt`` (UNet, VAE, text
tower, schedule buffers) and an RDEIC checkpoint such as ``rdeic_2_step2.ckpt`` (control module and
compression module). ``merge_official`` reproduces that merge for a *strict* load: drop ``model_ema.*`` and
``perceptual_loss.*``, supply ``logvar`` (zeros) when absent, and report in words what the RDEIC file adds or
lacks. The GaussianConditional CDF buffers arrive empty ([0]); the loader resizes them and the caller
rebuilds the tables with ``update(force=True)``.

:func:`weight_files` says, for a codec's options, which files it reads, what each is, where the right one comes
from and which tensor names and shapes it must hold (``kind`` ``rdeic``: the whole model; ``vae``: the
``rdeic-vae`` row, which reads only ``first_stage_model.*``). Every refusal is one line naming RDEIC (or
RDEIC's VAE), the option, the file, the cause and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from harness.codecs.checkpoints import (
    SAFETENSORS,
    TORCH_LEGACY,
    TORCH_ZIP,
    Misfit,
    Shapes,
    WeightFile,
    WeightsError,
    fail,
    file_sha256,
    inspect,
    key_problems,
    read_state,
    shipped_fix,
)
from harness.codecs.checkpoints import read_shapes as _read_shapes

__all__ = [
    "SAFETENSORS",
    "TORCH_LEGACY",
    "TORCH_ZIP",
    "WeightsError",
    "check_keys",
    "file_sha256",
    "merge_official",
    "read_shapes",
    "read_state_dict",
    "weight_files",
]

SD_FILE = "v2-1_512-ema-pruned.ckpt"
RDEIC_FILE = "rdeic_2_step2.ckpt"
SD_SOURCE = "huggingface.co/stabilityai/stable-diffusion-2-1-base"
RDEIC_SOURCE = "the links in the README of github.com/huai-chang/RDEIC"
TINY_DIR = "weights/rdeic-tiny"
TINY_RECIPE = "harness.train.tiny"
TRAINED_PREFIXES = ("control_model.", "preprocess_model.")
DROP_PREFIXES = ("model_ema.", "perceptual_loss.")
#: The codec names messages use, by ``kind``.
CODEC_NAMES = {"rdeic": "RDEIC", "vae": "RDEIC-VAE"}
#: Options that name weight files, by ``kind`` (the text cache is a cache, checked by ``weights check`` only).
ROLES = ("weights", "sd_ckpt", "rdeic_ckpt")


def missing_weights_message(what: str) -> str:
    return (
        f"RDEIC weights missing: {what}. The official model needs two files: the Stable Diffusion 2.1 base "
        f"checkpoint `{SD_FILE}` (stabilityai/stable-diffusion-2-1-base) and an RDEIC checkpoint such as "
        f"`{RDEIC_FILE}` (released with github.com/huai-chang/RDEIC). Point to them with the codec options "
        '`sd_ckpt` and `rdeic_ckpt` (suite TOML: options = { sd_ckpt = "...", rdeic_ckpt = "..." }, or the '
        "CLI flags --sd-ckpt/--rdeic-ckpt), or to a merged file with `weights` (.safetensors). "
        "Random weights run only when asked for explicitly (allow_random_weights = true), for plumbing tests."
    )


def guess_role(path: str | os.PathLike) -> str | None:
    """The role a file's name suggests (``None`` when it suggests none)."""
    name = Path(path).name.lower()
    if "rdeic-tiny" in name or (name.endswith(".safetensors") and "rdeic" in name):
        return "weights"
    if name.startswith(("v2-1", "v2_1", "sd")) or "stable-diffusion" in name or "stable_diffusion" in name:
        return "sd_ckpt"
    if "rdeic" in name:
        return "rdeic_ckpt"
    return None


def how_to_fix(path: str | os.PathLike, role: str | None = None) -> str:
    """Where the right file for ``role`` (guessed from the name when None) comes from, in one clause."""
    role = role or guess_role(path)
    name = Path(path).name
    if role == "sd_ckpt":
        return f"sd_ckpt must be the Stable Diffusion 2.1 base checkpoint `{SD_FILE}` from {SD_SOURCE} (--sd-ckpt)"
    if role == "rdeic_ckpt":
        return f"rdeic_ckpt must be an RDEIC checkpoint such as `{RDEIC_FILE}` ({RDEIC_SOURCE}; --rdeic-ckpt)"
    if role == "weights" and name.startswith("rdeic-tiny"):
        return shipped_fix(Path(TINY_DIR) / name, TINY_RECIPE)
    if role == "weights":
        return (
            "`weights` must be a merged .safetensors of the whole model (harness.codecs.rdeic.checkpoint."
            f"save_safetensors), or give the official pair: sd_ckpt `{SD_FILE}` ({SD_SOURCE}) and rdeic_ckpt "
            f"`{RDEIC_FILE}` ({RDEIC_SOURCE})"
        )
    return (
        f"the official files are `{SD_FILE}` ({SD_SOURCE}) for sd_ckpt and an RDEIC checkpoint such as "
        f"`{RDEIC_FILE}` ({RDEIC_SOURCE}) for rdeic_ckpt; RDEIC-tiny's are in {TINY_DIR}/"
    )


WHAT = {
    "sd_ckpt": f"the Stable Diffusion 2.1 base checkpoint {SD_FILE} (UNet, VAE, text tower)",
    "rdeic_ckpt": f"an official RDEIC checkpoint such as {RDEIC_FILE} (control and compression modules)",
    "weights": "a merged .safetensors of the whole model",
}


def describe(
    role: str | None, path: str | os.PathLike | None, config: str = "official", kind: str = "rdeic"
) -> WeightFile:
    """The :class:`WeightFile` of an RDEIC file in ``role`` (guessed from the name when None) for ``config``."""
    role = role or guess_role(path or "") or "weights"
    what = WHAT.get(role, "a weights file")
    if role == "weights" and path is not None and Path(path).name.startswith("rdeic-tiny"):
        what = "RDEIC-tiny's merged .safetensors, shipped in weights/rdeic-tiny/"
    return WeightFile(
        CODEC_NAMES[kind],
        role,
        None if path is None else str(path),
        what,
        how_to_fix(path or "", role),
        ("state_dict",),
        lambda shapes: structure_misfit(shapes, role, kind, config),
    )


def weight_files(options: Any, kind: str = "rdeic") -> list[WeightFile]:
    """The files an RDEIC (``kind`` rdeic) or RDEIC-VAE (``vae``) codec's ``options`` read: ``weights`` alone, or
    the official pair (``rdeic_ckpt`` optional for the VAE); none with random weights."""
    o = options
    if o.weights is not None:
        return [describe("weights", o.weights, o.config, kind)]
    if o.sd_ckpt is None and o.rdeic_ckpt is None and o.allow_random_weights:
        return []
    files = [describe("sd_ckpt", o.sd_ckpt, o.config, kind)]
    if kind == "rdeic" or o.rdeic_ckpt is not None:
        files.append(describe("rdeic_ckpt", o.rdeic_ckpt, o.config, kind))
    return files


def sniff(path: str | os.PathLike, role: str | None = None) -> str:
    """The format of an RDEIC weights file from its first bytes (see :func:`harness.codecs.checkpoints.inspect`)."""
    return inspect(describe(role, path))


def check_weights_file(path: str | os.PathLike, role: str | None = None, kind: str = "rdeic") -> str:
    """``sniff`` under the name the codec uses: the cheap check a codec can run when it is built (header only)."""
    return inspect(describe(role, path, kind=kind))


def read_state_dict(
    path: str | os.PathLike, prefixes: tuple[str, ...] | None = None, role: str | None = None, kind: str = "rdeic"
) -> dict[str, torch.Tensor]:
    """A state dict from a Lightning ``.ckpt`` (its ``state_dict`` entry; ``weights_only=True``) or a
    ``.safetensors`` file (format read from the content), optionally only the keys under ``prefixes``.
    ``role`` (``sd_ckpt``, ``rdeic_ckpt``, ``weights``) only improves the error messages."""
    return read_state(describe(role, path, kind=kind), prefixes)


def read_shapes(path: str | os.PathLike, role: str | None = None) -> Shapes:
    """Key -> shape of a weights file without reading its tensors: for ``evaluate.py weights check``."""
    return _read_shapes(describe(role, path))


def merge_official(
    sd_state: dict[str, torch.Tensor], cc_state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SD dict updated with the RDEIC dict (the official order), cleaned for a strict load against ``expected``
    (key -> shape). Returns (state, notes in plain words)."""
    notes: list[str] = []
    overridden = sorted(k for k in cc_state if k in sd_state and not k.startswith(TRAINED_PREFIXES))
    beyond = sorted(k for k in cc_state if not k.startswith(TRAINED_PREFIXES))
    if beyond:
        notes.append(
            f"the RDEIC file holds {len(beyond)} keys beyond control_model./preprocess_model. "
            f"({len(overridden)} of them replace SD keys), e.g. {', '.join(beyond[:3])}"
        )
    lacking = sorted(k for k in expected if k.startswith(TRAINED_PREFIXES) and k not in cc_state)
    if lacking:
        notes.append(f"the RDEIC file lacks {len(lacking)} trained keys, e.g. {', '.join(lacking[:3])}")
    merged = dict(sd_state)
    merged.update(cc_state)
    dropped = sorted(k for k in merged if k.startswith(DROP_PREFIXES))
    for k in dropped:
        del merged[k]
    if dropped:
        notes.append(f"dropped {len(dropped)} keys not used at inference (model_ema.*, perceptual_loss.*)")
    if "logvar" in expected and "logvar" not in merged:
        merged["logvar"] = torch.zeros(expected["logvar"])
        notes.append("supplied logvar = zeros (absent from both files; used only by the training loss)")
    return merged, notes


_PRESET_SHAPES: dict[str, Shapes] = {}


def preset_shapes(name: str) -> Shapes:
    """Key -> shape of the whole model of config ``name`` (built on the meta device: no memory, ~3 s official)."""
    if name not in _PRESET_SHAPES:
        from harness.codecs.rdeic.config import PRESETS
        from harness.codecs.rdeic.model import RDEICModel

        with torch.device("meta"):
            m = RDEICModel(PRESETS[name])
        _PRESET_SHAPES[name] = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    return _PRESET_SHAPES[name]


def entropy_tables(shapes: Shapes) -> tuple[str, ...]:
    """The GaussianConditional CDF buffers among ``shapes``' keys: any shape in a file (``update`` rebuilds them)."""
    return tuple(k for k in shapes if k.startswith("preprocess_model.gaussian_conditional.") and "bound" not in k)


def fitting_config(
    shapes: Shapes, entropy_keys: tuple[str, ...] = (), scope: tuple[str, ...] | None = None
) -> str | None:
    """The config (``official``, ``tiny``, ``test``) whose model ``shapes`` fit, if any (the text tower and
    ``logvar`` may be absent; with ``scope``, only the keys under those prefixes count). For the message
    "these weights are for config X"."""
    from harness.codecs.rdeic.config import PRESETS

    for name in sorted(PRESETS, key=lambda n: n == "official"):  # the cheap ones first
        exp = preset_shapes(name)
        if scope is not None:
            exp = {k: v for k, v in exp.items() if k.startswith(scope)}
        if key_problems(shapes, exp, entropy_keys, ("cond_stage_model.", "logvar")) is None:
            return name
    return None


def _config_of(expected: Shapes) -> str | None:
    from harness.codecs.rdeic.config import PRESETS

    for name in sorted(PRESETS, key=lambda n: n == "official"):
        exp = preset_shapes(name)
        if all(exp.get(k) == tuple(v) for k, v in expected.items()):
            return name
    return None


def structure_misfit(shapes: Shapes, role: str, kind: str, config: str) -> Misfit | None:
    """How the tensor names/shapes of a file in ``role`` differ from what codec ``kind`` (rdeic, vae) of
    ``config`` loads from it (None when they fit): a merged file is loaded as it is; the official pair is merged
    first (each file is checked for the keys it brings, ``model_ema.*`` / ``perceptual_loss.*`` dropped)."""
    full = preset_shapes(config)
    entropy = entropy_tables(full)
    fits = None
    if kind == "vae":
        vae = {k: v for k, v in full.items() if k.startswith("first_stage_model.")}
        got = {k: v for k, v in shapes.items() if k.startswith("first_stage_model.")}
        if role == "rdeic_ckpt":  # optional overrides: only those present must fit
            problem = key_problems(got, {k: vae[k] for k in got if k in vae}) if got else None
        else:
            problem = key_problems(got, vae)
            fits = fitting_config(got, (), ("first_stage_model.",)) if problem else None
    elif role == "weights":  # loaded as it is (strictly): nothing is dropped from a merged file
        problem = key_problems(shapes, full, entropy, ("cond_stage_model.", "logvar"))
        fits = fitting_config(shapes, entropy_tables(shapes)) if problem else None
    else:
        got = {k: v for k, v in shapes.items() if not k.startswith(DROP_PREFIXES)}  # as the official merge drops
        if role == "sd_ckpt":
            sd = {k: v for k, v in full.items() if not k.startswith(TRAINED_PREFIXES)}
            extra_trained = {k: full[k] for k in got if k.startswith(TRAINED_PREFIXES) and k in full}
            problem = key_problems(got, {**sd, **extra_trained}, entropy, ("logvar",))
        else:
            trained = {k: v for k, v in full.items() if k.startswith(TRAINED_PREFIXES)}
            beyond = {k: full[k] for k in got if k in full and not k.startswith(TRAINED_PREFIXES)}  # replace SD keys
            problem = key_problems(got, {**trained, **beyond}, entropy)
    if problem is None:
        return None
    fix = f'they are weights for config {fits!r}: set config = "{fits}"' if fits and fits != config else None
    return Misfit(f"holds tensors that do not fit config {config!r}: {problem}", fix)


def check_keys(
    state: dict[str, torch.Tensor],
    expected: Shapes,
    entropy_keys: tuple[str, ...],
    source: str | None = None,
    config: str | None = None,
    role: str | None = None,
    scope: tuple[str, ...] | None = None,
    kind: str = "rdeic",
) -> None:
    """Exact key match, same shapes except the GaussianConditional CDF buffers (rebuilt by update()). Raises
    :class:`WeightsError` in one line: what differs, and the config the weights fit when they fit another.
    ``source`` names the file(s) the state came from (``role``: the option that names it, for the fix),
    ``config`` the codec's config (inferred from ``expected`` when None), ``scope`` the key prefixes the caller
    loads (e.g. ``first_stage_model.`` for the VAE alone)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    problem = key_problems(shapes, expected, entropy_keys)
    if problem is None:
        return
    config = config or _config_of(expected)
    fits = fitting_config(shapes, entropy_keys, scope)
    fix = None
    if fits is not None and fits != config:
        fix = f'they are weights for config {fits!r}: set config = "{fits}" (or give the files of config {config!r})'
    target = f"config {config!r}" if config else "the model"
    f = describe(role, source or "", config or "official", kind)
    if role is None:  # the official pair, merged: both files named
        f = WeightFile(f.codec, "files", source, f.what, how_to_fix(""))
    raise fail(f, f"holds tensors that do not fit {target}: {problem}", fix)


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def read_text_cache(path: str | os.PathLike, key: str) -> torch.Tensor | None:
    """The cached empty-prompt context ``context.<key>`` of a text cache file, ``None`` when the file does not
    hold it; a damaged cache raises one line (delete it: it is rebuilt from the weights)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path)).get(f"context.{key}")
    except Exception as exc:  # whatever safetensors raises
        problem = f"is damaged ({type(exc).__name__})"
        fix = "delete it: it is rebuilt from the weights"
        raise WeightsError(f"RDEIC text cache {path} {problem}; {fix}", problem, fix, "RDEIC", str(path)) from None
