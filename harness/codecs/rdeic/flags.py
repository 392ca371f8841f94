"""``--rdeic-ckpt`` / ``--sd-ckpt``: CLI shorthands for the codec options ``rdeic_ckpt`` / ``sd_ckpt`` (no torch).

They set those options on every RDEIC codec config of the suite; when the suite has none (e.g. the JPEG2000
``bit_errors`` suite), an ``rdeic`` config labelled ``rdeic`` is added, so
``evaluate.py --suite bit_errors --codec rdeic --rdeic-ckpt PATH --sd-ckpt PATH`` runs the official model.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def is_rdeic(codec_name: str) -> bool:
    return codec_name == "rdeic" or codec_name.startswith("rdeic-")


def with_weight_flags(suite: Any, rdeic_ckpt: str | None, sd_ckpt: str | None) -> Any:
    """A copy of ``suite`` (harness.config.Suite) with the checkpoint paths applied to its RDEIC configs."""
    opts = {k: str(v) for k, v in (("rdeic_ckpt", rdeic_ckpt), ("sd_ckpt", sd_ckpt)) if v}
    if not opts:
        return suite
    from harness.config import CodecConfig

    codecs = [dataclasses.replace(c, options={**c.options, **opts}) if is_rdeic(c.codec) else c for c in suite.codecs]
    if not any(is_rdeic(c.codec) for c in suite.codecs):
        codecs.append(CodecConfig(codec="rdeic", label="rdeic", options=opts))
    return dataclasses.replace(suite, codecs=tuple(codecs))
