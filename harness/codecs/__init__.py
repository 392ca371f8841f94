"""Codec plugins. The registry lives in :mod:`harness.registry` (``CODECS``); this package holds the
base contract and the built-in codecs."""

from harness.codecs.base import Bitstream, Codec, CodecSpec, DecodedState, create_codec

__all__ = ["Bitstream", "Codec", "CodecSpec", "DecodedState", "create_codec"]
