"""The signing secret: configured, or generated once and kept (mode 0600) in the data dir."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from kefu.config import Settings

log = logging.getLogger(__name__)


def signing_secret(settings: Settings) -> bytes:
    """KEFU_AUTH__JWT_SECRET when set; otherwise data_dir/auth.secret (several replicas must share one: set it)."""
    if settings.auth.jwt_secret is not None:
        return settings.auth.jwt_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "auth.secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        log.info("generated a signing secret in %s; set KEFU_AUTH__JWT_SECRET when running several replicas", path)
    return path.read_text().strip().encode()
