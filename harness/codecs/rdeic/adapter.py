"""Adapters: what an OOD fine-tuning of RDEIC changed, stored apart from the base weights (METHODOLOGY.md §6).

An adapter is ``<name>.safetensors`` (tensors under their official state-dict names) plus ``<name>.json`` (the
sidecar: mode, base-codec fingerprint, dataset/split/preprocessing record, steps, lr, seed, validation metrics,
the sha256 of the tensor file). The codec loads one with ``options = { adapter = "path/to/adapter.safetensors" }``:
the tensors are overlaid on the base state before the model is built, after checking that

* the sidecar names the same **base** (architecture config + base weight files) as the codec: an adapter trained
  for one RDEIC is refused for another instead of silently producing a hybrid;
* the tensor file is the one the sidecar describes (sha256), and every tensor is a key of the base state with
  the same shape, under the prefixes its mode may change.

Modes (the only place they are defined):

* ``control``: the control module (zero convs included). The compression module, UNet and VAE are frozen, so the
  bitstream is unchanged: the "adapter" results of the OOD suite.
* ``lora``: low-rank factors for Linear/Conv2d weights of the control module and/or UNet attention (``peft``
  during training); stored as ``<weight>.lora_A`` / ``.lora_B`` with the scale in the sidecar and merged into the
  base weights at load (W + scale * B A). The bitstream is unchanged.
* ``full``: control module **and** compression module (entropy tables rebuilt with ``update(force=True)``).
  The rate changes: reported as a separate rate–distortion result, never as an adapter result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT = "codec-harness/rdeic-adapter/1"

#: mode -> state-dict prefixes the mode may change
MODES: dict[str, tuple[str, ...]] = {
    "control": ("control_model.",),
    "lora": ("control_model.", "model.diffusion_model."),
    "full": ("control_model.", "preprocess_model."),
}
#: modes whose bitstreams must be byte-identical to the base codec's
BITSTREAM_PRESERVING = ("control", "lora")
LORA_SUFFIXES = (".lora_A", ".lora_B")


class AdapterError(ValueError):
    """An adapter file that cannot be used with this codec (says why and what would fit)."""


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_adapter(path: str | os.PathLike, tensors: dict[str, Any], sidecar: dict[str, Any]) -> dict[str, Any]:
    """Write the tensors, then the sidecar with the tensors' sha256 (written last: a killed save leaves no
    sidecar, and a loader refuses a tensor file without one)."""
    from safetensors.torch import save_file

    from harness.hashing import file_sha256

    if sidecar.get("mode") not in MODES:
        raise AdapterError(f"adapter mode must be one of {', '.join(MODES)}, got {sidecar.get('mode')!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(path)
    side.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}, str(tmp))
    os.replace(tmp, path)
    record = {"format": FORMAT, **sidecar, "adapter_sha256": file_sha256(path)}
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    os.replace(tmp_side, side)
    return record


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    from harness.hashing import file_sha256

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise AdapterError(f"no adapter file at {str(path)!r}")
    if not side.is_file():
        raise AdapterError(f"adapter {path} has no sidecar {side.name} (interrupted save?): its base is unknown")
    try:
        record = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"adapter sidecar {side} is not valid JSON: {exc}") from None
    if record.get("format") != FORMAT:
        raise AdapterError(f"{side}: format {record.get('format')!r}, expected {FORMAT!r}")
    if record.get("mode") not in MODES:
        raise AdapterError(f"{side}: unknown mode {record.get('mode')!r}")
    if file_sha256(path) != record.get("adapter_sha256"):
        raise AdapterError(f"{path}: the tensor file does not match the sha256 in {side.name} (changed or truncated)")
    return record


def check_base(record: dict[str, Any], base_fingerprint: str, base_description: str) -> None:
    want = record.get("base", {}).get("fingerprint")
    if want != base_fingerprint:
        raise AdapterError(
            f"adapter trained for base {record.get('base', {}).get('description', '?')} "
            f"(fingerprint {str(want)[:12]}), but this codec is {base_description} (fingerprint "
            f"{base_fingerprint[:12]}): an adapter only fits the exact base weights it was trained on"
        )


def overlay(state: dict[str, Any], path: str | os.PathLike, record: dict[str, Any], prefixes: tuple[str, ...] | None):
    """``state`` (official key names, restricted to ``prefixes`` or whole) with the adapter applied."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    allowed = MODES[record["mode"]]
    out = dict(state)
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
        target = key[: -len(suffix)] if suffix else key
        if not target.startswith(allowed):
            raise AdapterError(f"adapter tensor {key!r} is outside what mode {record['mode']!r} may change ({allowed})")
        if suffix and record["mode"] != "lora":
            raise AdapterError(f"adapter tensor {key!r}: LoRA factors in a {record['mode']!r} adapter")
        if prefixes is not None and not target.startswith(prefixes):
            continue
        if target not in state:
            raise AdapterError(f"adapter tensor {target!r} is not a key of the base model")
        if suffix:
            lora.setdefault(target, {})[suffix] = value
            continue
        if tuple(value.shape) != tuple(state[target].shape) and not target.startswith("preprocess_model.gaussian_"):
            have, want = tuple(value.shape), tuple(state[target].shape)
            raise AdapterError(f"adapter tensor {key!r}: shape {have} != the base model's {want}")
        out[target] = value  # its own dtype: the model's fp32 parameters take it exactly (a fp16 base file must
        # not round the trained values back to fp16)
    scale = float((record.get("lora") or {}).get("scale", 1.0))
    for target, pair in lora.items():
        if set(pair) != set(LORA_SUFFIXES):
            raise AdapterError(f"adapter: {target!r} has only {sorted(pair)} of its LoRA factors")
        base = state[target]
        a, b = pair[".lora_A"].float(), pair[".lora_B"].float()
        delta = (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)).reshape(base.shape)
        out[target] = base.float() + scale * delta  # fp32, as the model computes with it
    return out
