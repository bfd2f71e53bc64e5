"""The app's screens: each `<name>.py` (a `SCREEN` class) with its `<name>.kv`."""

NAMES = (
    "signin",
    "home",
    "task",
    "hazard_report",
    "hazard_detail",
    "selfcheck",
    "nearby",
    "warnings",
    "outbox",
    "settings",
)
