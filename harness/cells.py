"""The unit of work: a cell, keyed by content (METHODOLOGY.md §1).

A cell's key hashes everything that can change its result: the image's pixel hash and shape, the
preprocessing, the codec fingerprint (name, code version, resolved options, weights, native library
versions), the corruption with its parameters and scope, the FEC layer, the suite seed and replicate, the
decode seed and the metric set. File names, labels and loop positions are *not* in it. All randomness of
a cell comes from a ``SeedSequence`` built from that key, so re-running gives identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from harness.hashing import key_of


@dataclass(frozen=True)
class Cell:
    # what is measured (all of it goes into the key) ...
    dataset: str
    dataset_version: str
    image_sha256: str
    height: int
    width: int
    preprocessing: str
    codec: str
    codec_fingerprint: str
    corruption: str
    params: dict[str, Any]
    scope: str
    suite_seed: int
    replicate: int
    decode_seed: int
    metrics: tuple[str, ...]
    fec: dict[str, Any] | None = None
    #: fingerprint of the codec whose channel/noise draws this cell reuses (common random numbers for paired
    #: before/after comparisons of codecs with identical bitstreams); None: its own
    channel_codec: str | None = None
    #: the registered name of that codec (e.g. ``jpeg2000`` for a JPEG2000* config that reuses JPEG2000's draws)
    channel_codec_name: str | None = field(default=None, compare=False)
    #: decoder-side information (codecs that declare it): the pixel sha256 of each clean side image by kind ...
    side_sha256: dict[str, str] | None = None
    #: ... and a side-information degradation crossed with this cell's corruption ({"name", "params", "kind"});
    #: None: the true side view (a cell whose own corruption acts on side information degrades it instead)
    side: dict[str, Any] | None = None
    # ... and descriptive fields for people, kept out of the key
    image_id: str = field(default="", compare=False)
    codec_label: str = field(default="", compare=False)
    codec_config: dict[str, Any] = field(default_factory=dict, compare=False)
    weights_hash: str | None = field(default=None, compare=False)
    level: str = field(default="", compare=False)
    #: how to rebuild the codec: the registry name the suite gave (a preset such as ``rdeic-tiny@low`` stays a
    #: preset) and the suite's options, paths included; and, for a rate-matched config, its reference's
    #: fingerprint (its own is then key_of({"codec": rebuilt fingerprint, "rate_of": rate_of}))
    codec_name: str = field(default="", compare=False)
    codec_options: dict[str, Any] = field(default_factory=dict, compare=False)
    rate_of: str | None = field(default=None, compare=False)

    def key_fields(self) -> dict[str, Any]:
        return (
            {
                "dataset": {"name": self.dataset, "version": self.dataset_version},
                "image": {"sha256": self.image_sha256, "shape": [self.height, self.width, 3]},
                "preprocessing": self.preprocessing,
                "codec": {"name": self.codec, "fingerprint": self.codec_fingerprint},
                "corruption": {"name": self.corruption, "params": self.params, "scope": self.scope},
                "fec": self.fec,
                "seed": {"suite": self.suite_seed, "replicate": self.replicate},
                "decode_seed": self.decode_seed,
                "metrics": sorted(self.metrics),
            }
            | ({"channel_codec": self.channel_codec} if self.channel_codec else {})
            | ({"side": {"sha256": self.side_sha256, "degradation": self.side}} if self.side_sha256 is not None else {})
        )

    @cached_property
    def key(self) -> str:
        return key_of(self.key_fields())

    @cached_property
    def rng_key(self) -> str:
        """The key the corruption RNG is seeded from: the cell's own, or (paired) the key the same cell of the
        ``channel_codec`` has, so both codecs see the same flips / noise. The side view is left out (a crossed
        degradation draws from :meth:`side_rng`): the channel does not know what the decoder holds, so bit errors
        with a missing view hit the bytes they hit with the true view, and a codec decoding without side
        information, paired with one decoding with it, gets the same flips too."""
        if not self.channel_codec and self.side_sha256 is None:
            return self.key
        fields = {k: v for k, v in self.key_fields().items() if k not in ("side", "channel_codec")}
        if self.channel_codec:
            name = self.channel_codec_name or self.codec
            fields["codec"] = {"name": name, "fingerprint": self.channel_codec}
        return key_of(fields)

    @cached_property
    def encode_key(self) -> str:
        """Cells sharing this share one encode (and one clean decode per decode seed)."""
        return encode_key(self.image_sha256, self.height, self.width, self.preprocessing, self.codec_fingerprint)

    def rng(self) -> np.random.Generator:
        """The corruption RNG of this cell: seeded from its key, never from position or global state."""
        return np.random.default_rng(np.random.SeedSequence(int(self.rng_key, 16)))

    def side_rng(self) -> np.random.Generator:
        """The RNG of a side-information degradation crossed with this cell's corruption: another stream of the
        same key, so the primary corruption's draws are those the same level gets with the true side view."""
        return np.random.default_rng(np.random.SeedSequence(int(self.rng_key, 16), spawn_key=(1,)))


def encode_key(image_sha256: str, height: int, width: int, preprocessing: str, codec_fingerprint: str) -> str:
    return key_of(
        {
            "image": {"sha256": image_sha256, "shape": [height, width, 3]},
            "preprocessing": preprocessing,
            "codec": codec_fingerprint,
        }
    )


def decode_key(
    codec_fingerprint: str,
    stream_sha256: str,
    decode_seed: int,
    reference_sha256: str,
    latent: Any = None,
    metrics: tuple[str, ...] = (),
    side: str | None = None,
) -> str:
    """Identical byte strings (e.g. zero flips at low BER) decode once: memoise on what is decoded, on the
    image it is measured against (two images can share a low-rate stream, not their metrics), on the metric set
    (a resumed run with new metrics must not reuse records that lack them) and, for codecs with decoder-side
    information, on the side images the decoder was given (``side``: their identity, see harness/side.py)."""
    fields = {
        "codec": codec_fingerprint,
        "stream": stream_sha256,
        "decode_seed": decode_seed,
        "reference": reference_sha256,
        "latent": latent,
        "metrics": sorted(metrics),
    }
    return key_of(fields | ({"side": side} if side is not None else {}))
