"""The `Camera` interface and its desktop stand-in.

Android's adapter (an intent with a FileProvider URI; plyer's `file://` camera crashes on
current Android, plyer#812) lives behind the same interface in a later module.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Protocol


class Camera(Protocol):
    """Takes (or picks) one photo and returns the file it wrote, or None when cancelled."""

    def capture(self, directory: Path) -> Path | None:
        """Put a new photo in `directory`; return its path (None: the user cancelled)."""
        ...


class FileCamera:
    """Desktop stand-in for a camera or a file picker: returns a copy of a given file.

    `queue` holds the files the next captures return, in order; an empty queue is a cancel.
    The copy keeps the original untouched, as a camera app's file would be the phone's own.
    """

    def __init__(self, *files: Path) -> None:
        self.queue = list(files)

    def capture(self, directory: Path) -> Path | None:
        """Copy the next queued file into `directory`; None when nothing is queued."""
        if not self.queue:
            return None
        source = self.queue.pop(0)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"capture-{uuid.uuid4().hex}{source.suffix or '.jpg'}"
        shutil.copyfile(source, target)
        return target
