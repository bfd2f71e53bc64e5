"""Where the phone keeps its tokens: a small `SecretStore` interface.

Android's adapter (the keystore) implements the same three methods; the desktop one writes a
JSON file only its owner can read or write (0600), created with those permissions so there is
no moment when another user could open it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol


class SecretStore(Protocol):
    """A small key-value store for secrets (refresh and access tokens)."""

    def get(self, key: str) -> str | None:
        """The secret stored under `key`, or None."""
        ...

    def put(self, key: str, value: str) -> None:
        """Store `value` under `key` (durably)."""
        ...

    def delete(self, key: str) -> None:
        """Forget `key` (no error when absent)."""
        ...


class MemorySecretStore:
    """Secrets in memory only (tests; a kiosk that must forget on exit)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """The secret under `key`, or None."""
        return self.values.get(key)

    def put(self, key: str, value: str) -> None:
        """Store `value`."""
        self.values[key] = value

    def delete(self, key: str) -> None:
        """Forget `key`."""
        self.values.pop(key, None)


class FileSecretStore:
    """Secrets in one JSON file with owner-only permissions (0600), replaced atomically."""

    MODE = 0o600

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        data = json.loads(text)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # O_CREAT with the mode: the file never exists with wider permissions, whatever umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.MODE)
        try:
            os.fchmod(fd, self.MODE)  # an old temp file may have had other bits
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def get(self, key: str) -> str | None:
        """The secret under `key`, or None."""
        return self._read().get(key)

    def put(self, key: str, value: str) -> None:
        """Store `value` under `key`."""
        data = self._read()
        data[key] = value
        self._write(data)

    def delete(self, key: str) -> None:
        """Forget `key`; the file goes when it holds nothing."""
        data = self._read()
        if data.pop(key, None) is None:
            return
        if data:
            self._write(data)
        else:
            self.path.unlink(missing_ok=True)
