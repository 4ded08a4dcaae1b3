"""All prompt templates and fixed bot replies, versioned, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from pydantic import RootModel

from kefu.datafiles import load_yaml_model
from kefu.errors import ConfigError
from kefu.language import Language
from kefu.shop import Bilingual

PROMPTS_DIR = Path(__file__).parent


class _Replies(RootModel[dict[str, Bilingual]]):
    pass


class PromptLibrary:
    """Renders the prompt templates of one version and looks up fixed bilingual replies."""

    def __init__(self, version: str = "v1", directory: Path = PROMPTS_DIR) -> None:
        template_dir = directory / version
        if not template_dir.is_dir():
            available = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("_"))
            raise ConfigError(f"KEFU_CHAT__PROMPT_VERSION: no prompt version {version!r}; available: {available}")
        self.version = version
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # prompts are plain text for a model, not HTML
            keep_trailing_newline=False,
            trim_blocks=True,
        )
        self._replies = load_yaml_model(directory / "replies.yaml", _Replies).root

    def render(self, name: str, **variables: Any) -> str:
        return self._env.get_template(f"{name}.j2").render(**variables).strip()

    def reply(self, key: str, language: Language) -> str:
        return self._replies[key].pick(language)
