"""Reed–Solomon FEC throughput, compiled ``creedsolo`` vs pure-Python ``reedsolo`` (issue #17, 4).

RS(255, 223) over bytes (t = 16), MB of *message* bytes per CPU second (one thread; CPU time, not wall time, so
that other jobs on shared cores do not change the figure):
  * raw coder: ``RSCodec(32, nsize=255)`` encode; decode of clean codewords; decode with t/2 and with t byte
    errors per codeword (random positions and values, the same for both coders);
  * the harness layer (``corruptions.fec.ReedSolomonFEC``: framing, padding, depth-4 interleaving) with each
    backend, encode and decode with t/2 errors per codeword.
The pure-Python coder gets fewer bytes (``--pure-kib``) because it is ~100x slower; each figure is the best of
``--repeats`` timed passes.

    .venv/bin/python benchmarks/bench_fec.py [--kib 1024] [--pure-kib 64] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common
import numpy as np

N, K = 255, 223
T = (N - K) // 2


def _backends() -> dict[str, tuple[Any, type[Exception]]]:
    out: dict[str, tuple[Any, type[Exception]]] = {}
    try:
        from creedsolo import ReedSolomonError, RSCodec

        out["creedsolo (compiled)"] = (RSCodec, ReedSolomonError)
    except ImportError:
        pass
    from reedsolo import ReedSolomonError as PyError
    from reedsolo import RSCodec as PyCodec

    out["reedsolo (pure Python)"] = (PyCodec, PyError)
    return out


def _best(fn: Any, repeats: int) -> float:
    """CPU seconds of the least disturbed of ``repeats`` calls (one thread: CPU time is the work done, whatever
    share of the cores the other jobs leave)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _damage(codewords: list[bytes], errors: int, rng: np.random.Generator) -> list[bytearray]:
    out = []
    for cw in codewords:
        b = bytearray(cw)
        for pos in rng.choice(N, size=errors, replace=False):
            b[pos] ^= int(rng.integers(1, 256))
        out.append(b)
    return out


def raw_coder(codec_cls: Any, error_cls: type[Exception], nbytes: int, repeats: int) -> dict[str, float]:
    rs = codec_cls(N - K, nsize=N)
    rng = np.random.default_rng(0)
    messages = [bytearray(rng.integers(0, 256, K, dtype=np.uint8).tobytes()) for _ in range(max(1, nbytes // K))]
    mb = len(messages) * K / 1e6
    codewords = [bytes(rs.encode(m)) for m in messages]
    out = {"message_mb": mb, "encode": mb / _best(lambda: [rs.encode(m) for m in messages], repeats)}
    for label, errors in (("decode_clean", 0), ("decode_t/2_errors", T // 2), ("decode_t_errors", T)):
        damaged = _damage(codewords, errors, rng)
        # check once (untimed) that every codeword comes back: the speed of a coder that fails means nothing
        assert all(bytes(rs.decode(bytearray(d))[0]) == bytes(m) for d, m in zip(damaged, messages, strict=True))
        out[label] = mb / _best(lambda d=damaged: [rs.decode(bytearray(x)) for x in d], repeats)
    del error_cls
    return out


def harness_layer(codec_cls: Any, error_cls: type[Exception], name: str, nbytes: int, repeats: int) -> dict:
    """``ReedSolomonFEC`` with this backend forced (its constructor reads ``rs_backend()``)."""
    from corruptions import fec as fec_module

    cfg = fec_module.FECConfig(n=N, k=K, depth=4)
    original = fec_module.rs_backend
    fec_module.rs_backend = lambda: (codec_cls, error_cls, name)
    try:
        layer = fec_module.ReedSolomonFEC(cfg)
    finally:
        fec_module.rs_backend = original
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    protected = layer.encode(data)
    arr = np.frombuffer(protected, np.uint8).copy()
    # t/2 byte errors per codeword: positions spread uniformly (interleaving sends them to all codewords)
    hits = rng.choice(arr.size, size=(arr.size // N) * (T // 2), replace=False)
    arr[hits] ^= rng.integers(1, 256, hits.size, dtype=np.uint8)
    received = arr.tobytes()
    decoded = layer.decode(received)
    mb = len(data) / 1e6
    return {
        "message_mb": mb,
        "encode": mb / _best(lambda: layer.encode(data), repeats),
        "decode_t/2_errors_spread": mb / _best(lambda: layer.decode(received), repeats),
        "failed_codewords": decoded.failed_codewords,
        "recovered": decoded.data == data,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kib", type=int, default=1024, help="message KiB for the compiled coder")
    ap.add_argument("--pure-kib", type=int, default=64, help="message KiB for the pure-Python coder")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"code": f"RS({N},{K}), t={T}", "backends": {}}
    with common.quiet_warnings(), common.Meter() as meter:
        for name, (cls, err) in _backends().items():
            nbytes = 1024 * (args.pure_kib if "pure" in name else args.kib)
            result["backends"][name] = {
                "raw": raw_coder(cls, err, nbytes, args.repeats),
                "harness_layer_depth4": harness_layer(cls, err, name, nbytes, args.repeats),
            }
    result.update(meter.as_dict())
    b = result["backends"]
    compiled, pure = b.get("creedsolo (compiled)"), b["reedsolo (pure Python)"]
    print(f"Reed-Solomon {result['code']}, MB of message bytes per CPU second (best of {args.repeats}):")
    for name, r in b.items():
        raw, lay = r["raw"], r["harness_layer_depth4"]
        print(
            f"  {name:24s} encode {raw['encode']:8.2f}  decode clean {raw['decode_clean']:8.2f}  "
            f"t/2 errors {raw['decode_t/2_errors']:8.2f}  t errors {raw['decode_t_errors']:8.2f}  | harness layer "
            f"encode {lay['encode']:8.2f} decode {lay['decode_t/2_errors_spread']:8.2f}"
        )
    if compiled:
        result["speedup"] = {k: compiled["raw"][k] / pure["raw"][k] for k in pure["raw"] if k != "message_mb"}
        print("  compiled / pure: " + ", ".join(f"{k} {v:.0f}x" for k, v in result["speedup"].items()))
    else:
        print("  creedsolo is not installed: no compiled figure")
    print(f"  machine CPU busy {100 * (meter.busy_share or 0):.0f}%, load {meter.load_before} -> {meter.load_after}")
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
