"""Loading operator data files (YAML) into validated models, with file-and-line error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kefu.errors import DataFileError

M = TypeVar("M", bound=BaseModel)


def _node_line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at `loc`, or of the deepest ancestor that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        else:
            child = None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


# libyaml's parser where PyYAML was built with it (its wheels are): the same documents, several times faster than
# the pure-Python one, which made reading the demo shop's flows and intents a second of every start.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(str(path), None, "file not found") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), None, "not UTF-8 text") from None


def load_yaml(path: Path) -> Any:
    """The file's data; a file that is not YAML is reported with its line."""
    text = _read(path)
    try:
        return yaml.load(text, Loader=_LOADER)  # a safe loader: libyaml's or PyYAML's SafeLoader
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise DataFileError(str(path), line, f"invalid YAML: {exc.problem}") from None


def _yaml_tree(path: Path) -> yaml.Node | None:
    """The file's node tree, with line marks: composed only when a problem needs its line."""
    try:
        return yaml.compose(_read(path), Loader=_LOADER)
    except (DataFileError, yaml.MarkedYAMLError):
        return None


def yaml_line(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of `loc` (e.g. `("intents", 3, "tools", 0)`) in a YAML file, for errors found after loading."""
    root = _yaml_tree(path)
    return _node_line(root, loc) if root is not None else None


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Parse and validate a YAML file; the first problem is reported with its file and line."""
    data = load_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise DataFileError(str(path), yaml_line(path, loc), f"{field}: {err['msg']}{more}") from None
