"""``--rdeic-ckpt`` / ``--sd-ckpt``: CLI shorthands for the codec options ``rdeic_ckpt`` / ``sd_ckpt`` (no torch).

They set those options on every RDEIC codec config of the suite (``rdeic``, ``rdeic-vae``, ...) that does not
run a weights file of its own: a config or preset with ``weights`` (RDEIC-tiny) keeps it, since ``weights``
would silently win over the flags. When no config takes them (e.g. the JPEG2000 ``bit_errors`` suite, or a suite
of RDEIC-tiny presets only), an ``rdeic`` config labelled ``rdeic`` (``rdeic-official`` if that label is taken) is
added.

``codec = "rdeic-auto"`` in a suite (``bit_errors``, ``latent_noise``) means "the RDEIC of this run": the official
model when its two checkpoints are given (flags, or the ``RDEIC_SD_CKPT`` / ``RDEIC_CKPT`` environment variables),
otherwise the shipped ``rdeic-tiny@low``. :func:`resolve_auto` says which one ran, and the store records it
(``codec_name``), so a number is never attributed to the wrong model.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def is_rdeic(codec_name: str) -> bool:
    return codec_name == "rdeic" or codec_name.startswith("rdeic-")


def own_weights(codec_name: str, options: dict[str, Any]) -> str | None:
    """The ``weights`` file a codec config runs (its options over its preset's), if any."""
    from harness.registry import CODECS, Preset, RegistryError

    merged = dict(options)
    try:
        entry = CODECS.get(codec_name) if codec_name in CODECS else None
    except (RegistryError, ImportError, AttributeError):  # a broken plugin is reported when the suite builds it
        entry = None
    if isinstance(entry, Preset):
        merged = {**entry.options, **merged}
    return merged.get("weights")


#: Suite codec names meaning "the RDEIC of this run": (codec with official checkpoints, preset without them).
AUTOS = {"rdeic-auto": ("rdeic", "rdeic-tiny@low"), "rdeic-vae-auto": ("rdeic-vae", "rdeic-vae-tiny")}


def resolve_auto(suite: Any, rdeic_ckpt: str | None, sd_ckpt: str | None) -> tuple[Any, str | None]:
    """``suite`` with its ``rdeic-auto`` configs resolved, and one line saying which RDEIC runs (None when the
    suite has no such config). Checkpoints: the flags, else ``RDEIC_CKPT`` / ``RDEIC_SD_CKPT``."""
    import os

    if not any(c.codec in AUTOS for c in suite.codecs):
        return suite, None
    rdeic_ckpt = rdeic_ckpt or os.environ.get("RDEIC_CKPT")
    sd_ckpt = sd_ckpt or os.environ.get("RDEIC_SD_CKPT")
    official = bool(rdeic_ckpt and sd_ckpt)
    extra = {"rdeic_ckpt": str(rdeic_ckpt), "sd_ckpt": str(sd_ckpt)} if official else {}

    def resolved(c: Any) -> Any:
        if c.codec not in AUTOS:
            return c
        with_files, fallback = AUTOS[c.codec]
        return dataclasses.replace(c, codec=with_files if official else fallback, options={**c.options, **extra})

    if official:
        note = f"RDEIC: the official model ({sd_ckpt} + {rdeic_ckpt})"
    else:
        note = (
            "RDEIC: rdeic-tiny@low, the shipped small model.\n"
            "       For the official one give --rdeic-ckpt and --sd-ckpt (`evaluate.py weights check`)."
        )
    return dataclasses.replace(suite, codecs=tuple(resolved(c) for c in suite.codecs)), note


def with_weight_flags(suite: Any, rdeic_ckpt: str | None, sd_ckpt: str | None) -> Any:
    """A copy of ``suite`` (harness.config.Suite) with the checkpoint paths applied to its RDEIC configs."""
    opts = {k: str(v) for k, v in (("rdeic_ckpt", rdeic_ckpt), ("sd_ckpt", sd_ckpt)) if v}
    if not opts:
        return suite
    from harness.config import CodecConfig

    def takes(c: Any) -> bool:
        return is_rdeic(c.codec) and own_weights(c.codec, c.options) is None

    codecs = [dataclasses.replace(c, options={**c.options, **opts}) if takes(c) else c for c in suite.codecs]
    if not any(takes(c) for c in suite.codecs):
        label = "rdeic" if all(c.label != "rdeic" for c in suite.codecs) else "rdeic-official"
        codecs.append(CodecConfig(codec="rdeic", label=label, options=opts))
    return dataclasses.replace(suite, codecs=tuple(codecs))
