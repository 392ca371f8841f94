"""``evaluate.py --list``: every suite, codec, corruption, dataset and metric with a one-line description, in
100 columns, read without running any plugin code (as lm-evaluation-harness indexes its tasks).

Where each line comes from, so nothing is written twice:

- a suite: the first sentence of its TOML ``description`` (read with :mod:`tomllib`, not validated);
- a preset (:class:`harness.registry.Preset`): its ``description``;
- a lazy ``module:attr`` target (every built-in, and entry-point plugins): the first sentence of that class's
  docstring, else of its module's, found by parsing the module's source with :mod:`ast`; the module is located
  with :class:`importlib.machinery.PathFinder`, which does not execute any package ``__init__`` (``--list``
  must not import torch);
- an object already imported: :func:`inspect.getdoc`.
"""

from __future__ import annotations

import ast
import importlib.machinery
import inspect
import re
import sys
import tomllib
from pathlib import Path

WIDTH = 100


def first_sentence(text: str) -> str:
    """The first sentence of the first paragraph of ``text`` (a period outside brackets, then a space or the end),
    whitespace collapsed, reST markup dropped."""
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    flat = " ".join(paragraph.split()).replace("``", "")
    flat = re.sub(r":\w+:`~?([^`]*)`", r"\1", flat)
    depth = 0
    for i, ch in enumerate(flat):
        depth += (ch in "([{") - (ch in ")]}")
        ends = i + 1 == len(flat) or flat[i + 1] == " "
        if ch == "." and depth <= 0 and ends and (flat[i - 1 : i].isalnum() or flat[i - 1 : i] == ")"):
            return flat[:i]
    return flat


def _module_source(module: str) -> Path | None:
    """The ``.py`` file of ``module`` without importing it or its parent packages (None if not found)."""
    path: list[str] | None = None
    spec = None
    parts = module.split(".")
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        if name in sys.modules and getattr(sys.modules[name], "__spec__", None) is not None:
            spec = sys.modules[name].__spec__
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _class_node(module: str, attr: str, hops: int = 3) -> tuple[ast.ClassDef | None, ast.Module | None, str]:
    """(class node, module tree, module source) of ``module:attr``, following ``from x import attr`` re-exports
    (``harness.datasets:BundledSamples``) up to ``hops`` times; ``(None, tree, source)`` if it is not a class."""
    source = _module_source(module)
    if source is None:
        return None, None, ""
    text = source.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(source))
    name = attr.split(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, tree, text
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and hops and any(a.name == name and not a.asname for a in node.names):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if source.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join([*anchor[: len(anchor) - node.level + 1], *([base] if base else [])])
            found, found_tree, found_text = _class_node(base, attr, hops - 1)
            if found is not None:
                return found, found_tree, found_text
    return None, tree, text


def _class_string(node: ast.ClassDef, attr: str) -> str:
    """The string a class body assigns to ``attr`` (``description = "..."``), or ""."""
    for item in node.body:
        targets = item.targets if isinstance(item, ast.Assign) else []
        targets = [item.target] if isinstance(item, ast.AnnAssign) else targets
        value = getattr(item, "value", None)
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets) and isinstance(value, ast.Constant):
            return str(value.value) if isinstance(value.value, str) else ""
    return ""


def _params(node: ast.ClassDef, source: str, tree: ast.Module | None) -> str:
    """``name (comment), ...`` of the fields of the class's ``Params`` dataclass, from their trailing comments
    (a ``Params`` inherited from a base class of the same module counts)."""
    lines = source.splitlines()
    local = {n.name: n for n in (tree.body if tree is not None else []) if isinstance(n, ast.ClassDef)}
    for item in node.body:
        if isinstance(item, ast.ClassDef) and item.name == "Params":
            fields = []
            for field in item.body:
                if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name):
                    comment = lines[field.lineno - 1].partition("#")[2].strip()
                    fields.append(f"{field.target.id} ({comment})" if comment else field.target.id)
            return ", ".join(fields)
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in local and local[base.id] is not node:
            inherited = _params(local[base.id], source, tree)
            if inherited:
                return inherited
    return ""


def _card(name: str) -> str:
    """``title: description`` of a dataset card ``datasets/<name>.toml`` (the card is the dataset's own record)."""
    path = Path(__file__).resolve().parent.parent / "datasets" / f"{name}.toml"
    try:
        card = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return ": ".join(str(card[k]) for k in ("title", "description") if card.get(k))


def target_description(target: str) -> str:
    """One line about the plugin ``"module:attr"``, from the plugin's own text: its ``description`` attribute,
    else its docstring, else its dataset card (``card_name``), else its module's docstring plus its ``Params``."""
    module, _, attr = target.partition(":")
    node, tree, source = _class_node(module, attr)
    if node is None:
        return first_sentence(ast.get_docstring(tree) or "") if tree is not None else ""
    for about in (_class_string(node, "description"), first_sentence(ast.get_docstring(node) or "")):
        if about:
            return first_sentence(about)
    card = _class_string(node, "card_name")
    if card and _card(card):
        return first_sentence(_card(card))
    about = first_sentence(ast.get_docstring(tree) or "") if tree is not None else ""
    params = _params(node, source, tree)
    if about and params:  # the module's kind (up to its first clause), then what this plugin takes
        return re.split(r"[,:;(]", about, maxsplit=1)[0].strip() + ": " + params
    return about or params


def entry_description(registry: object, name: str) -> str:
    """One line about ``name`` of a :class:`harness.registry.Registry`, imported only if it already is."""
    from harness.registry import Preset

    entry = registry._entries[name]  # type: ignore[attr-defined]
    if isinstance(entry, Preset):
        about = entry.description or f"{entry.codec} with {entry.options}"
        return f"preset of {entry.codec}: {about}"
    if isinstance(entry, str):
        return target_description(entry)
    return first_sentence(inspect.getdoc(entry) or "")


def suite_description(path: Path) -> str:
    """The first sentence of a suite file's ``description`` ("" when it has none or does not parse)."""
    try:
        return first_sentence(str(tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")))
    except (OSError, tomllib.TOMLDecodeError):
        return ""


def fit(name: str, about: str, width: int = WIDTH, name_width: int = 20) -> str:
    """``name`` then ``about`` on one line of at most ``width`` columns (cut with an ellipsis)."""
    line = f"  {name:<{name_width}} {about}".rstrip()
    if len(line) > width:
        line = line[: width - 1].rstrip() + "…"
    return line


def list_everything(width: int = WIDTH) -> str:
    """The text of ``--list``: a heading per kind, one line per name, every line at most ``width`` columns."""
    from harness.config import SUITES_DIR, suite_names
    from harness.registry import CODECS, CORRUPTIONS, DATASETS, METRICS

    lines = ["suites (--suite NAME):"]
    lines += [fit(n, suite_description(SUITES_DIR / f"{n}.toml"), width) for n in suite_names()]
    for title, registry, how in (
        ("codecs", CODECS, "a suite's [[codecs]] codec; --codec; --set NAME.OPTION=VALUE"),
        ("corruptions", CORRUPTIONS, "a suite's [[corruptions]] or [[side_info]]"),
        ("datasets", DATASETS, "a suite's [[datasets]] name; --dataset"),
        ("metrics", METRICS, "a suite's metrics"),
    ):
        lines.append(f"{title} ({how}):")
        lines += [fit(n, entry_description(registry, n), width) for n in registry.names()]
    return "\n".join(lines)
