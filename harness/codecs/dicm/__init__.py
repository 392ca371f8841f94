"""DICM: distributed image compression with a conditional diffusion decoder and decoder-side information
(our implementation, written from ``../shared/dicm/BRIEF.md``; the official code is dongqingcc/DICC, MIT).

Importing this package imports no torch; the submodules that build networks do.

::

    x (primary view) --context_fn: enc, hyper_enc--> y, z --rANS (z: EntropyBottleneck, y: GaussianConditional)--> file
    file  --parse: header, z, hyper_dec (mean, scale), y--> y_hat, z_hat                  [untrusted, isolated]
    y_hat --context_fn.dec--> ctx pyramid ─┐
    side image (never transmitted) --encode_w--> w pyramid ─┴─ add ─> UNet (per-level concat) ─ DDIM ─> uint8

Modules: ``config`` (dataclass presets, no torch), ``blocks`` (channel LayerNorm, ResNet blocks, linear
attention), ``compressor`` (the CDC-style compressor: analysis, hyperprior, decoder pyramid, compressai entropy
models), ``unet`` (the ε-predictor with the context pyramid), ``diffusion`` (linear schedule, DDIM), ``model``
(the whole official state-dict tree), ``bitstream`` (our container), ``checkpoint`` (official checkpoints:
strict key/shape check against the manifest, FlexiblePrior -> EntropyBottleneck; our safetensors), ``codec``
(the harness plugin, registry name ``dicm``).
"""
