"""LDM-RSIC (Li et al., TGRS 2025): an ELIC bitstream whose decode is enhanced by a Transformer (MEN) guided by a
distortion prior that a small latent diffusion model generates at the decoder. Implemented from the project's
clean-room brief (``../shared/ldm_rsic/BRIEF.md``); the official code has no licence and none of it is used.

Modules: :mod:`.config` (presets, no torch), :mod:`.elic` (the compressor and its checkerboard/channel context
coding), :mod:`.men` (MEN, DFAM, condition encoder, denoiser, 4-step sampler), :mod:`.bitstream` (our container),
:mod:`.checkpoint` (strict loading against the official manifest), :mod:`.codec` (the ``ldm-rsic`` and ``j2k+men``
plugins).
"""
