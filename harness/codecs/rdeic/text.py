"""The OpenCLIP ViT-H-14 text tower (``cond_stage_model.model.*``) and the empty-prompt embedding cache.

RDEIC's prompt is always ``""`` (SPEC §2.5), so the tokenizer is not needed: the tokens are
[49406 (start), 49407 (end), 0 x 75] and the output is ln_final(layers[:-1](tok + pos)) with a causal mask,
shape [1, 77, width]. ``empty_prompt_embedding`` computes it once and caches it next to the weights, keyed by
a hash of the text-tower weights, so the text encoder is not built again when the cache exists.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from harness.codecs.rdeic.config import TextConfig

SOT, EOT = 49406, 49407


def empty_prompt_tokens(context_length: int = 77) -> torch.Tensor:
    tokens = torch.zeros(1, context_length, dtype=torch.long)
    tokens[0, 0], tokens[0, 1] = SOT, EOT
    return tokens


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: L, B, C
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))


class TextTower(nn.Module):
    """open_clip CLIP with ``.visual`` deleted: the key names of ``cond_stage_model.model.*``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width).normal_(std=0.01))
        self.transformer = _Transformer(cfg)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.output_dim).normal_(std=cfg.width**-0.5))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # loaded, unused

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features after ln_final: B x L x width."""
        n = tokens.shape[1]
        mask = torch.full((n, n), float("-inf"), device=tokens.device).triu_(1)
        x = (self.token_embedding(tokens) + self.positional_embedding[:n]).permute(1, 0, 2)
        for block in self.transformer.resblocks[: len(self.transformer.resblocks) - self.cfg.skip_last_layers]:
            x = block(x, mask)
        return self.ln_final(x.permute(1, 0, 2))


class FrozenOpenCLIPEmbedder(nn.Module):
    """``cond_stage_model``: holds the tower as ``.model`` (the official attribute name)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.model = TextTower(cfg)

    @torch.no_grad()
    def encode_empty(self) -> torch.Tensor:
        device = self.model.token_embedding.weight.device
        return self.model(empty_prompt_tokens(self.model.cfg.context_length).to(device)).float()


def empty_prompt_embedding(
    cache_path: str | os.PathLike | None,
    build_text: Callable[[], FrozenOpenCLIPEmbedder],
    weights_key: str,
) -> torch.Tensor:
    """The [1, 77, width] empty-prompt context: read from ``cache_path`` when it holds an embedding computed from
    the same text weights (``weights_key``), else computed by ``build_text()`` (a FrozenOpenCLIPEmbedder) and
    written there (best effort: a read-only weights folder just skips the cache)."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_path) if cache_path else None
    if path is not None and path.exists():
        data = load_file(str(path))
        key = f"context.{weights_key}"
        if key in data:
            return data[key]
    context = build_text().encode_empty().cpu().contiguous()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({f"context.{weights_key}": context}, str(tmp))
            os.replace(tmp, path)
        except OSError:
            pass
    return context
