"""Decoder-side information of a cell: the side images a codec that declares ``side_info`` is given.

::

    dataset.load_side(entry, kind) ──> clean side image (its sha256 is in the cell key)
        ├─ the cell's corruption acts on side information (a [[side_info]] level, stream untouched):
        │      degradation.apply(clean, cell.rng(), context)
        ├─ the cell crosses a degradation with its own corruption (``cross``): degradation.apply(clean,
        │      cell.side_rng(), context)
        └─ otherwise: the true side view
    ──> {kind: image or None (missing)} passed to reconstruct; its identity joins the decode key

The side images reach the decoder through a trusted, decoder-local channel, never through the bitstream, so this
runs in the main process. A degradation that needs what the dataset cannot give for one image (a frame ``k``
away at the end of a sequence) raises ``SideInfoUnavailable``: that cell is not applicable, not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.cells import Cell
from harness.hashing import key_of, pixels_sha256


@dataclass(frozen=True)
class SideInput:
    """What the decoder of one cell is given: ``images`` by kind (None: missing), their ``identity`` (for the
    decode key), and what the degradation recorded (``extra``: actual bpp of a re-compressed view, ...)."""

    images: dict[str, np.ndarray | None]
    identity: str
    extra: dict[str, Any] = field(default_factory=dict)
    degradation: dict[str, Any] | None = None  # {"name", "params", "kind"}; None: the true side view


def identity_of(images: dict[str, np.ndarray | None]) -> str:
    return key_of({k: "missing" if v is None else pixels_sha256(v) for k, v in sorted(images.items())})


def side_input(cell: Cell, plan: Any, clean: dict[str, np.ndarray]) -> SideInput | None:
    """The side images of ``cell`` (None for codecs without side information). Raises SideInfoUnavailable."""
    if cell.side_sha256 is None:
        return None
    from corruptions.side_info import SideContext
    from harness.planning import corruption_id

    images: dict[str, np.ndarray | None] = dict(clean)
    corruption = plan.corruption_of(cell)
    if corruption.acts_on == "side_info":
        degradation, kind, rng = corruption, cell.scope, cell.rng()
        described = {"name": cell.corruption, "params": cell.params, "kind": kind}
    elif cell.side is not None:
        degradation = plan.corruptions[corruption_id(cell.side["name"], cell.side["params"])]
        kind, rng, described = cell.side["kind"], cell.side_rng(), cell.side
    else:
        return SideInput(images, identity_of(images))
    ds, entry = plan.images[cell.image_sha256]
    context = SideContext(
        kind=kind,
        image_id=entry.id,
        other_scene=_other_scene(plan, ds, entry, kind),
        neighbour=(lambda offset: ds.load_neighbour(entry, kind, offset)) if hasattr(ds, "load_neighbour") else None,
    )
    result = degradation.apply(clean[kind], rng, context)
    images[kind] = result.image
    return SideInput(images, identity_of(images), dict(result.extra), described)


def _other_scene(plan: Any, ds: Any, entry: Any, kind: str) -> Any:
    """Another image's side view of the same dataset and size (a mismatched pair), drawn with the cell's rng
    among the run's images in a fixed order; None when the run has no other such image."""
    others = sorted(
        e.sha256
        for d, e, _ in plan.chosen
        if d.name == ds.name and e.sha256 != entry.sha256 and (e.height, e.width) == (entry.height, entry.width)
    )
    if not others:
        return None

    def pick(rng: np.random.Generator) -> np.ndarray:
        other_ds, other = plan.images[others[int(rng.integers(len(others)))]]
        return other_ds.load_side(other, kind)

    return pick
