"""Liandong's test suites.

The change-log guard is on for every test (and every server process a test starts): a commit
that writes a synced row without recording it (`server.changes.record`) fails, whichever test
made it (`server/domain/sync/changelog.py`).
"""

import os

os.environ.setdefault("LIANDONG_SYNC_GUARD", "1")
