"""Loading the official checkpoints (SPEC §1.1) and our own ``.safetensors``.

The official inference merges two files: the SD 2.1 checkpoint ``v2-1_512-ema-pruned.ckpt`` (UNet, VAE, text
tower, schedule buffers) and an RDEIC checkpoint such as ``rdeic_2_step2.ckpt`` (control module and
compression module). ``merge_official`` reproduces that merge for a *strict* load: drop ``model_ema.*`` and
``perceptual_loss.*``, supply ``logvar`` (zeros) when absent, and report in words what the RDEIC file adds or
lacks. The GaussianConditional CDF buffers arrive empty ([0]); the loader resizes them and the caller
rebuilds the tables with ``update(force=True)``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

SD_FILE = "v2-1_512-ema-pruned.ckpt"
RDEIC_FILE = "rdeic_2_step2.ckpt"
TRAINED_PREFIXES = ("control_model.", "preprocess_model.")
DROP_PREFIXES = ("model_ema.", "perceptual_loss.")


class WeightsError(FileNotFoundError):
    """Weights missing or unusable; the message says which files are needed and which options point to them."""


def missing_weights_message(what: str) -> str:
    return (
        f"RDEIC weights missing: {what}. The official model needs two files: the Stable Diffusion 2.1 base "
        f"checkpoint `{SD_FILE}` (stabilityai/stable-diffusion-2-1-base) and an RDEIC checkpoint such as "
        f"`{RDEIC_FILE}` (released with github.com/huai-chang/RDEIC). Point to them with the codec options "
        '`sd_ckpt` and `rdeic_ckpt` (suite TOML: options = { sd_ckpt = "...", rdeic_ckpt = "..." }, or the '
        "CLI flags --sd-ckpt/--rdeic-ckpt), or to a merged file with `weights` (.safetensors). "
        "Random weights run only when asked for explicitly (allow_random_weights = true), for plumbing tests."
    )


def read_state_dict(path: str | os.PathLike, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a Lightning ``.ckpt`` (its ``state_dict`` entry; ``weights_only=True``) or a
    ``.safetensors`` file, optionally only the keys under ``prefixes``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_weights_message(f"no file at {str(path)!r}"))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        out = {}
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
                if prefixes is None or key.startswith(prefixes):
                    out[key] = fh.get_tensor(key)
        return out
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # e.g. a Lightning file that pickles non-tensor objects
        raise WeightsError(
            f"cannot read {path} with torch.load(weights_only=True): {exc}. Extract its 'state_dict' into a "
            ".safetensors file with a trusted tool and pass that instead."
        ) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return state


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


def check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], entropy_keys: tuple[str, ...]
) -> None:
    """Exact key match, same shapes except the GaussianConditional CDF buffers (rebuilt by update())."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in expected if k in state and k not in entropy_keys and tuple(state[k].shape) != tuple(expected[k])
    )
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {', '.join(extra[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {', '.join(wrong[:4])})")
        raise WeightsError("checkpoint does not match the model: " + "; ".join(parts))


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def file_sha256(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 (deliberate memo)
    """sha256 of a weights file (memoised per path, size and mtime: hashing 5 GB takes seconds)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]
