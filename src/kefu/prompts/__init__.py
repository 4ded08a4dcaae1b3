"""All prompt templates and fixed bot replies, versioned, in one place."""

from __future__ import annotations

import hashlib
import os
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
        self._template_dir = template_dir
        self._replies_digest = hashlib.blake2b((directory / "replies.yaml").read_bytes(), digest_size=16).digest()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._listed: int | None = None
        self._files: list[str] = []
        self._fingerprint = ""

    def render(self, name: str, **variables: Any) -> str:
        return self._env.get_template(f"{name}.j2").render(**variables).strip()

    def reply(self, key: str, language: Language) -> str:
        return self._replies[key].pick(language)

    def fingerprint(self) -> str:
        """A hash of this version's templates (as they are on disk now) and its fixed replies; cached answers keyed
        on it are never served once a prompt changes. Re-reads the templates only when one's size or mtime moved."""
        # Asked on every turn: the directory is listed again only when its own mtime moved (a template added,
        # removed or renamed into place), and the known files are each stat'ed (an edit in place).
        listed = os.stat(self._template_dir).st_mtime_ns
        if listed != self._listed:
            self._files = sorted(str(f) for f in self._template_dir.glob("*.j2"))
            self._listed = listed
        stamp = tuple((path, st.st_mtime_ns, st.st_size) for path in self._files for st in (os.stat(path),))
        if stamp != self._stamp:
            digest = hashlib.blake2b(self.version.encode(), digest_size=16)
            digest.update(self._replies_digest)
            for path in self._files:
                digest.update(os.path.basename(path).encode() + b"\0" + Path(path).read_bytes())
            self._stamp, self._fingerprint = stamp, digest.hexdigest()
        return self._fingerprint
