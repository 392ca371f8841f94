"""Options as frozen dataclasses: one place that turns user-given values into one, with one-line errors."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def build_options(cls: type[T], values: dict[str, Any], owner: str, noun: str, error: type[Exception]) -> T:
    """``cls(**values)``, raising ``error`` that names the unknown fields and the valid ones (a typo in a
    suite must not silently fall back to a default)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"{owner}: unknown {noun}(s) {', '.join(unknown)}; valid: {', '.join(sorted(known)) or 'none'}")
    for name, value in values.items():
        if not is_finite_value(value):
            raise error(f"{owner}: {noun} {name} must be finite, got {value!r}")
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise error(f"{owner}: {exc}") from None


def is_finite_value(value: Any) -> bool:
    """False for a float NaN/inf anywhere in ``value`` (numbers, lists, tuples, dict values): no parameter
    of a codec, corruption, FEC layer or suite is meaningful at NaN or infinity, and NaN compares false with
    every range check, so it would slip through them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(is_finite_value(v) for v in value)
    if isinstance(value, dict):
        return all(is_finite_value(v) for v in value.values())
    return True


# -- `--set CODEC.OPTION=VALUE`: one command-line path to every codec option (issue #27) --------------------------


@dataclass(frozen=True)
class Override:
    """One ``--set NAME.OPTION=VALUE``. ``name``: a codec config's label in the suite, or a registered codec or
    preset name; ``value``: the TOML value of the text (``2``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``), or the text
    itself when it is not one (paths: ``weights/x.ckpt``)."""

    name: str
    option: str
    value: Any
    text: str


def parse_override(text: str, error: type[Exception]) -> Override:
    """``NAME.OPTION=VALUE`` -> :class:`Override`; ``error`` (one line) for anything else. The name may contain
    dots (``rdeic-tiny@low``): the option is what follows the last dot before ``=``."""
    head, sep, raw = text.partition("=")
    name, dot, option = head.strip().rpartition(".")
    if not sep or not dot or not name or not option.isidentifier():
        raise error(f"--set takes CODEC.OPTION=VALUE (e.g. --set ldm-rsic.elic_ckpt=PATH), got {text!r}")
    try:
        value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if not is_finite_value(value):
        raise error(f"--set {text}: {option} must be finite, got {value!r}")
    return Override(name, option, value, text)


def _base_codec(name: str) -> tuple[str, dict[str, Any]]:
    """(registered codec, preset options merged) of a registry name, following presets of presets."""
    from harness.registry import CODECS, Preset

    options: dict[str, Any] = {}
    entry = CODECS.get(name)
    while isinstance(entry, Preset):
        options = {**entry.options, **options}
        name, entry = entry.codec, CODECS.get(entry.codec)
    return name, options


def codec_option_names(codec: str) -> tuple[list[str], tuple[str, ...]]:
    """(every option of registered codec ``codec``, those naming files: ``path_options``). Imports the codec's
    module (its ``Options`` dataclass is the one list of what it takes)."""
    from harness.registry import CODECS

    cls = CODECS.get(codec)
    fields = [f.name for f in dataclasses.fields(cls.Options)]  # type: ignore[attr-defined]
    return fields, tuple(getattr(cls, "path_options", ()))


def _takes(config: Any, name: str, other_files: bool) -> bool:
    """Whether suite codec ``config`` is built from codec or preset ``name`` and takes its overrides: not when
    they name weight files other than ``weights`` and the config runs a merged ``weights`` file of its own."""
    from harness.registry import RegistryError

    try:
        base, preset = _base_codec(config.codec)
    except RegistryError:  # a name the suite check reports itself (e.g. a typo in the TOML)
        return False
    if name not in (config.codec, base):
        return False
    return not (other_files and {**preset, **config.options}.get("weights"))


def apply_overrides(suite: Any, overrides: list[Override], error: type[Exception]) -> Any:
    """``suite`` (a :class:`harness.config.Suite`) with each ``--set`` applied to the codec configs it names.

    Which configs a name reaches:

    - a label of the suite: that config;
    - else a codec or preset name: every config built from it (``rdeic`` also reaches ``rdeic-tiny@low``), except
      that a config running a merged ``weights`` file of its own (the tiny presets) keeps it when another file
      option is set (``elic_ckpt``: the official weights are meant, not a mix);
    - when no config takes a name whose overrides name a file, one config of that codec is added, labelled with
      the name (``NAME-official`` if the label is taken): the official weights run beside the suite's own
      configs, as ``--rdeic-ckpt`` does;
    - a name that reaches nothing otherwise is an ``error`` naming the suite's labels.

    Every option is checked against the codec's ``Options``: an unknown one is an ``error`` that lists the valid
    ones. The codecs check the values themselves when they are built (before any work)."""
    from harness.config import CodecConfig
    from harness.registry import CODECS, RegistryError

    codecs = list(suite.codecs)
    for name in dict.fromkeys(o.name for o in overrides):
        mine = [o for o in overrides if o.name == name]
        values = {o.option: o.value for o in mine}
        labelled = [i for i, c in enumerate(codecs) if c.label == name]
        if not labelled and name not in CODECS:
            labels = ", ".join(c.label for c in codecs)
            try:
                CODECS.get(name)
            except RegistryError as exc:
                raise error(
                    f"--set {mine[0].text}: {name!r} is no codec label of suite {suite.name!r} ({labels}) and {exc}"
                ) from None
        base = _base_codec(codecs[labelled[0]].codec)[0] if labelled else _base_codec(name)[0]
        valid, path_options = codec_option_names(base)
        unknown = [o for o in mine if o.option not in valid]
        if unknown:
            raise error(
                f"--set {unknown[0].text}: codec {base} has no option {unknown[0].option!r}; valid: {', '.join(valid)}"
            )
        other_files = "weights" not in values and any(k in path_options for k in values)
        takers = labelled or [i for i, c in enumerate(codecs) if _takes(c, name, other_files)]
        for i in takers:
            codecs[i] = dataclasses.replace(codecs[i], options={**codecs[i].options, **values})
        if not takers and any(k in path_options for k in values):
            label = name if all(c.label != name for c in codecs) else f"{name}-official"
            codecs.append(CodecConfig(codec=name, label=label, options=values))
        elif not takers:
            labels = ", ".join(f"{c.label} ({c.codec})" for c in codecs)
            raise error(
                f"--set {mine[0].text}: suite {suite.name!r} has no {name} config (its configs: {labels}); "
                "name one of those labels"
            )
    return dataclasses.replace(suite, codecs=tuple(codecs))
