"""Robustness and generalization evaluation harness for image codecs.

Data flow of one suite run (each stage is one module)::

    datasets/ ──> harness.datasets ──> image (uint8 HxWx3, content-hashed)
                                          │
                     harness.codecs  encode once per (image, codec config) ──> cache (stream + clean decode)
                                          │
                     corruptions/    bitstream channel (bytes -> bytes, per scope)
                                          │
                     harness.workers isolated `parse` in persistent subprocesses (crash/timeout safe)
                                          │
                     harness.codecs  `reconstruct` (trusted) ──> output checks ──> harness.metrics
                                          │
                     harness.store   SQLite, one transaction per cell ──> reports/ (tables)

Importing this package is cheap on purpose: decode workers import it, and must not pay for torch.
"""

__version__ = "0.1.0"
