"""RDEIC: diffusion-based extreme image compression with relay residual diffusion (our implementation).

Written from ``../shared/rdeic/SPEC.md`` (module tree, widths, forward order, sampler arithmetic, bitstream).
Importing this package imports no torch; the submodules that build networks do.

::

    image --VAE encoder trunk--> h (x0.18215) --Compression.compress--> file (y rANS string, z VQ indices)
    file  --parse: header, z indices, hyper_dec, checkerboard rANS--> y_hat          [untrusted, isolated]
    y_hat --g_s--> guide_hint, c_latent --relay sampler (UNet + control)--> x0 --VAE decode--> uint8

Modules: ``config`` (dataclass presets), ``schedule`` (NumPy schedule numbers), ``blocks``/``unet``/``vae``/
``text`` (networks), ``compression`` (analysis/synthesis, VQ, context model), ``bitstream`` (container and
z coders), ``sampler`` (relay residual sampler), ``model`` (the whole state-dict tree), ``checkpoint``
(official ckpt merge, safetensors), ``codec`` (the harness plugin).
"""
