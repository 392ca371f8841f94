"""Architecture presets: one set of classes, parameterised by these frozen dataclasses (no torch here).

``official`` reproduces RDEIC exactly (SPEC §2: SD 2.1-base UNet, KL-f8 VAE, OpenCLIP ViT-H text tower,
20%-width control module, 10-slice checkerboard compression module with a 16384-entry VQ codebook); its
``state_dict()`` equals ``../shared/rdeic/state_dict_manifest.json``. ``tiny`` and ``test`` are the same code
with smaller numbers (``test`` is for unit tests: seconds on a CPU, random weights only).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling factors that get a SpatialTransformer
    num_head_channels: int = 64
    context_dim: int = 1024
    transformer_depth: int = 1


@dataclass(frozen=True)
class ControlConfig:
    """RDEIC's ControlModule: an encoder-only UNet at ``ratio`` width, conditioned on the guide hint."""

    ratio: float = 0.2  # width = int(model_channels * ratio)
    hint_channels: int = 256  # = the synthesis transform's output (guide_hint) channels
    num_head_channels: int = 16  # head dim = the largest divisor of the width that is <= this


@dataclass(frozen=True)
class VAEConfig:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # len 4: the KL-f8 downsampling factor 8 is assumed elsewhere
    num_res_blocks: int = 2
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 4
    embed_dim: int = 4

    @property
    def feature_channels(self) -> int:
        return self.ch * self.ch_mult[-1]


@dataclass(frozen=True)
class TextConfig:
    """OpenCLIP text tower; only the empty prompt is ever encoded (SPEC §2.5)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 24
    output_dim: int = 1024  # text_projection (loaded, unused)
    skip_last_layers: int = 1  # "penultimate": run layers[:-1], then ln_final


@dataclass(frozen=True)
class CompressionConfig:
    in_nc: int = 512  # VAE feature channels
    out_nc: int = 4  # c_latent channels
    N: int = 256
    M: int = 256
    slice_ch: tuple[int, ...] = (8, 8, 8, 8, 16, 16, 32, 32, 64, 64)
    codebook_size: int = 16384
    hyper_dec_mid: int = 384  # RB(M -> mid), RB(mid -> 2M) at the end of hyper_dec
    channel_ctx_hidden: tuple[int, int] = (224, 128)

    def __post_init__(self) -> None:
        if sum(self.slice_ch) != self.M:
            raise ValueError(f"slice_ch {self.slice_ch} must sum to M={self.M}")


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.0120
    used_timesteps: int = 300  # relay start index = used_timesteps - 1
    scale_factor: float = 0.18215


@dataclass(frozen=True)
class ModelConfig:
    name: str
    unet: UNetConfig = field(default_factory=UNetConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if self.compression.in_nc != self.vae.feature_channels:
            raise ValueError("compression.in_nc must equal the VAE feature channels (ch * ch_mult[-1])")
        if self.control.hint_channels != self.compression.N:
            raise ValueError("control.hint_channels must equal compression.N (the guide_hint channels)")
        if self.text.width != self.unet.context_dim:
            raise ValueError("text.width must equal unet.context_dim")
        if len(self.vae.ch_mult) != 4:
            raise ValueError("the VAE must downsample by 8 (len(ch_mult) == 4)")


OFFICIAL = ModelConfig(name="official")

# ``tiny``: the project's own small model (harness/train/tiny.py trains it; weights/rdeic-tiny/ ships it).
# 8 latent channels instead of 4 (a better autoencoder ceiling for a small model); a narrow text tower (its only
# use is the fixed empty-prompt context, so its vocabulary table dominates its size).
TINY = ModelConfig(
    name="tiny",
    unet=UNetConfig(
        in_channels=8,
        out_channels=8,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_head_channels=32,
        context_dim=32,
    ),
    control=ControlConfig(ratio=0.5, hint_channels=64, num_head_channels=16),
    vae=VAEConfig(ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, z_channels=8, embed_dim=8),
    text=TextConfig(width=32, heads=2, layers=2, output_dim=32),
    compression=CompressionConfig(
        in_nc=64,
        out_nc=8,
        N=64,
        M=64,
        slice_ch=(4, 4, 8, 16, 32),
        codebook_size=1024,
        hyper_dec_mid=96,
        channel_ctx_hidden=(64, 32),
    ),
)

TEST = ModelConfig(
    name="test",
    unet=UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(1,),
        num_head_channels=16,
        context_dim=32,
    ),
    control=ControlConfig(ratio=0.5, hint_channels=16, num_head_channels=8),
    vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1),
    text=TextConfig(width=32, heads=2, layers=2, output_dim=32),
    compression=CompressionConfig(
        in_nc=32, N=16, M=16, slice_ch=(2, 2, 4, 8), codebook_size=64, hyper_dec_mid=24, channel_ctx_hidden=(16, 8)
    ),
)

PRESETS: dict[str, ModelConfig] = {c.name: c for c in (OFFICIAL, TINY, TEST)}


def get_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown RDEIC config {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
