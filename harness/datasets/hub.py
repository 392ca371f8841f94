"""Hugging Face hub access that fails fast offline, and ``evaluate.py datasets fetch``.

The hub client retries for about 23 s before giving up when there is no network. Here nothing waits: a
dataset id that is not in the local cache is refused at once when ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``
is set, or when ``huggingface.co`` cannot be reached within a couple of seconds, with one line saying what
to do (fetch on a machine with internet, or name a local path in the suite).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.datasets.base import DatasetError

HUB_HOST = "huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def reachable(host: str = HUB_HOST, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout_s`` (DNS included: run in a thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s + 0.5)
    return bool(result and result[0])


def hub_cache_dirs(hub_id: str) -> list[Path]:
    """Where a cached copy of the dataset ``hub_id`` would be (hub snapshot cache, ``datasets`` arrow cache)."""
    home = Path(
        os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface")
    )
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    arrow = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    return [hub / f"datasets--{hub_id.replace('/', '--')}", arrow / hub_id.replace("/", "___")]


def hub_cached(hub_id: str) -> bool:
    return any(p.is_dir() and any(p.iterdir()) for p in hub_cache_dirs(hub_id))


def not_available(name: str, hub_id: str, why: str, local_hint: str = "") -> DatasetError:
    hint = f" or {local_hint}" if local_hint else " or set path = ... for it in the suite"
    return DatasetError(
        f"{name}: hub dataset {hub_id} is not cached and {why}; run `python evaluate.py datasets fetch {name}` "
        f"on a machine with internet{hint}"
    )


@contextmanager
def forced_offline() -> Iterator[None]:
    """Cache-only hub access for this block, even when the libraries were imported without the offline
    flag (they read it at import time): a cached copy then loads without a single network retry."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst

    saved = (dconfig.HF_HUB_OFFLINE, dconfig.HF_DATASETS_OFFLINE, hconst.HF_HUB_OFFLINE)
    dconfig.HF_HUB_OFFLINE = dconfig.HF_DATASETS_OFFLINE = hconst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dconfig.HF_HUB_OFFLINE, dconfig.HF_DATASETS_OFFLINE, hconst.HF_HUB_OFFLINE = saved


def open_hub_split(name: str, hub_id: str, split: str, local_hint: str = "") -> Any:
    """``datasets.load_dataset(hub_id, split=split)``, refused at once (one line) when it would have to
    download and cannot; a cached copy is read cache-only when offline or when the hub is unreachable."""
    offline = hub_offline() or not reachable()
    if not hub_cached(hub_id) and offline:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else f"{HUB_HOST} is unreachable"
        raise not_available(name, hub_id, why, local_hint)
    try:
        from datasets import load_dataset

        if offline:
            with forced_offline():
                return load_dataset(hub_id, split=split)
        return load_dataset(hub_id, split=split)
    except Exception as exc:  # the hub library raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{name}: cannot load {hub_id} split {split!r}: {first}") from None


def fetch(name: str, card: dict[str, Any], dest: Path | None = None) -> str:
    """Download the hub dataset named by ``card['fetch']`` (needs internet; licence permitting): every split
    through ``datasets.load_dataset`` into the Hugging Face cache, where the loader then finds it offline
    (whatever the repository's file format), or, with ``dest``, a raw snapshot of the repository files."""
    spec = card.get("fetch", {})
    if not spec.get("allowed", False):
        raise DatasetError(f"{name}: fetching is not offered: {spec.get('reason', 'see its card')}")
    if spec.get("method") != "hub":
        raise DatasetError(f"{name}: unknown fetch method {spec.get('method')!r} in its card")
    hub_id = spec["hub_id"]
    if hub_offline():
        raise DatasetError(f"{name}: cannot fetch {hub_id}: HF_HUB_OFFLINE is set; unset it on a machine with internet")
    if not reachable():
        raise DatasetError(f"{name}: cannot fetch {hub_id}: {HUB_HOST} is unreachable (no internet here)")
    if dest is not None:
        from huggingface_hub import snapshot_download

        dest.mkdir(parents=True, exist_ok=True)
        snapshot_download(repo_id=hub_id, repo_type="dataset", local_dir=str(dest))
        return f'a snapshot of {hub_id} in {dest} (name it with path = "{dest}")'
    from datasets import load_dataset

    splits = load_dataset(hub_id)
    sizes = ", ".join(f"{k}={len(v)}" for k, v in splits.items())
    return f"{hub_id} ({sizes}) in the Hugging Face cache; loaders read it from there, offline too"
