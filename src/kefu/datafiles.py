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


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(str(path), None, "file not found") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), None, "not UTF-8 text") from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise DataFileError(str(path), line, f"invalid YAML: {exc.problem}") from None


def yaml_line(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of `loc` (e.g. `("intents", 3, "tools", 0)`) in a YAML file, for errors found after loading."""
    try:
        _, root = load_yaml(path)
    except DataFileError:
        return None
    return _node_line(root, loc)


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Parse and validate a YAML file; the first problem is reported with its file and line."""
    data, root = load_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise DataFileError(str(path), _node_line(root, loc), f"{field}: {err['msg']}{more}") from None
