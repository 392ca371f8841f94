"""Architecture presets of LDM-RSIC: frozen dataclasses, no torch (listing codecs must not import it).

``official`` reproduces the official module tree (brief §2, ``../shared/ldm_rsic/state_dict_manifest.json``):
ELIC ``TestModel(N=192, M=320)`` with groups [16, 16, 32, 64, 192], and the S2 network (MEN dim 48, blocks
[2, 2, 4, 4], heads [1, 2, 4, 8], 16 prior tokens of width 256, K = 3 upsamplings, 4 diffusion steps).
``tiny`` is the project's own small variant (brief §5; trained by ``harness/train/ldm_rsic_tiny.py``), ``test`` is
for unit tests (seconds on a CPU, random weights only).

Geometry: the DFAM turns the 4 x 4 token grid into a (4 * 2**K)-pixel map at the MEN's latent level (input / 8),
so the MEN runs on squares of ``native_size = 32 * 2**K`` pixels only: 256 official (K = 3), 64 tiny (K = 1, brief §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The five official rate points (λ of the loss λ·255²·MSE + bpp), indexed by the container's λ byte.
LAMBDAS: tuple[float, ...] = (0.0004, 0.0008, 0.0032, 0.0100, 0.0450)


@dataclass(frozen=True)
class ELICConfig:
    N: int = 192
    M: int = 320
    groups: tuple[int, ...] = (16, 16, 32, 64, 192)  # uneven channel slices of y (brief §2.1)
    cc_hidden: tuple[int, int] = (224, 128)  # channel-context transforms: 5x5 convs in -> h0 -> h1 -> 2 g_i
    agg_hidden: tuple[int, int] = (640, 512)  # ParamAggregation: 1x1 convs in -> a0 -> a1 -> 2 g_i

    def __post_init__(self) -> None:
        if sum(self.groups) != self.M:
            raise ValueError(f"groups {self.groups} must sum to M={self.M}")
        if self.N % 2 or self.M % 2:
            raise ValueError("N and M must be even (residual bottlenecks halve them)")

    @property
    def hyper_out(self) -> int:
        """h_s's middle width: 3N/2 (288 for N = 192)."""
        return self.N * 3 // 2


@dataclass(frozen=True)
class MENConfig:
    """The S2 network (``G``, ``condition``, ``denoise``, ``diffusion``)."""

    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (2, 2, 4, 4)
    refinement_blocks: int = 4  # built (strict key set), never called at inference (brief §2.4)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.0
    bias: bool = False
    token_dim: int = 256  # width of the prior tokens (condition output, denoiser width)
    tokens_side: int = 4  # 4 x 4 = 16 tokens
    upsamplings: int = 3  # K: conv3x3 + PixelShuffle(2) steps of the DFAM's prior map
    cross_head_dim: int = 128  # the HIM blocks' (unused) cross-attention width per head
    ca_reduction: int = 16  # DFAM channel-attention reduction r
    cond_channels: int = 64  # condition encoder width
    n_encoder_res: int = 5
    n_denoise_res: int = 8
    timesteps: int = 4
    linear_start: float = 0.1
    linear_end: float = 0.99
    #: add the MEN input to its output. Official: False (``dual_pixel_task = True``: no global residual, brief §2.4);
    #: the tiny variant sets True (a documented deviation: a tiny MEN trained for minutes cannot re-learn the identity)
    global_residual: bool = False

    @property
    def native_size(self) -> int:
        """The only input side the MEN accepts: 8 x the DFAM map side (4 * 2**K)."""
        return 8 * self.tokens_side * 2**self.upsamplings


@dataclass(frozen=True)
class ModelConfig:
    name: str
    elic: ELICConfig = field(default_factory=ELICConfig)
    men: MENConfig = field(default_factory=MENConfig)


OFFICIAL = ModelConfig(name="official")

TINY = ModelConfig(
    name="tiny",
    elic=ELICConfig(N=48, M=96, groups=(8, 8, 16, 32, 32), cc_hidden=(48, 32), agg_hidden=(192, 144)),
    men=MENConfig(
        dim=16,
        num_blocks=(1, 1, 1, 1),
        refinement_blocks=1,
        heads=(1, 1, 2, 2),
        token_dim=64,
        upsamplings=1,
        cross_head_dim=16,
        ca_reduction=8,
        cond_channels=32,
        n_encoder_res=2,
        n_denoise_res=4,
        global_residual=True,
    ),
)

TEST = ModelConfig(
    name="test",
    elic=ELICConfig(N=16, M=32, groups=(4, 4, 8, 8, 8), cc_hidden=(16, 8), agg_hidden=(32, 24)),
    men=MENConfig(
        dim=8,
        num_blocks=(1, 1, 1, 1),
        refinement_blocks=1,
        heads=(1, 1, 2, 2),
        token_dim=16,
        upsamplings=1,
        cross_head_dim=8,
        ca_reduction=4,
        cond_channels=8,
        n_encoder_res=1,
        n_denoise_res=2,
    ),
)

PRESETS: dict[str, ModelConfig] = {c.name: c for c in (OFFICIAL, TINY, TEST)}


def get_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown LDM-RSIC config {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
