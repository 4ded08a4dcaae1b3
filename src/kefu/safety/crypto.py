"""Encryption at rest for kept originals and PII vaults (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from kefu.errors import ConfigError

PREFIX = "enc:v1:"


class TextCipher:
    """Encrypts and decrypts short texts with the configured key; ciphertexts carry a version prefix."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError(
                "KEFU_PRIVACY__ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64 bytes); "
                "generate one with `kefu privacy new-key`"
            ) from None

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(PREFIX):
            return token
        try:
            return self._fernet.decrypt(token[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "stored text was encrypted with another key; check KEFU_PRIVACY__ENCRYPTION_KEY"
            ) from None


def is_encrypted(text: str) -> bool:
    return text.startswith(PREFIX)
