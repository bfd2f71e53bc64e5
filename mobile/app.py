"""Start the field app: `python -m mobile.app [--server URL --user NAME --password PW]`.

Sets Kivy's environment before Kivy is imported (no Kivy command-line parsing, a private
`KIVY_HOME` unless one is given), then runs `mobile.gui.LiandongApp`. `make app` starts it
against `make run`'s server signed in as a demo user; `main.py` (buildozer) calls `main()`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AppOptions:
    """What the app is started with (desktop flags; Android starts with the defaults)."""

    server: str = "http://127.0.0.1:8000"
    user: str = ""
    password: str = ""
    data_dir: Path | None = None
    lang: str | None = None
    theme: str | None = None
    fix: tuple[float, float, float] | None = None  # desktop position: lon, lat, accuracy
    fix_track: bool = False  # desktop: a fix that improves over a few seconds (GPS warm-up)
    fix_timeout_s: float = 30.0
    scenario: str = ""  # tests.app.scenarios.<name> drives the app (tests, screenshots, bench)
    size: tuple[int, int] = (420, 860)
    extra: dict[str, str] = field(default_factory=dict)


def parse(argv: list[str] | None = None) -> AppOptions:
    """Command-line flags (environment `LIANDONG_APP_*` as defaults)."""
    env = os.environ.get
    p = argparse.ArgumentParser(prog="liandong-app", description="Liandong field app")
    p.add_argument("--server", default=env("LIANDONG_APP_SERVER", AppOptions.server))
    p.add_argument("--user", default=env("LIANDONG_APP_USER", ""))
    p.add_argument("--password", default=env("LIANDONG_APP_PASSWORD", ""))
    p.add_argument("--data-dir", default=env("LIANDONG_APP_DATA"))
    p.add_argument("--lang", default=env("LIANDONG_APP_LANG"))
    p.add_argument("--theme", default=env("LIANDONG_APP_THEME"))
    p.add_argument("--fix", default=env("LIANDONG_APP_FIX"), help="lon,lat[,accuracy_m]")
    p.add_argument("--fix-track", action="store_true", help="GPS warm-up: accuracy improves")
    p.add_argument("--fix-timeout", type=float, default=30.0)
    p.add_argument("--scenario", default=env("LIANDONG_APP_SCENARIO", ""))
    p.add_argument("--size", default="420x860")
    a = p.parse_args(argv)
    fix = None
    if a.fix:
        parts = [float(x) for x in a.fix.split(",")]
        fix = (parts[0], parts[1], parts[2] if len(parts) > 2 else 8.0)
    w, h = (int(x) for x in a.size.split("x"))
    return AppOptions(
        server=a.server,
        user=a.user,
        password=a.password,
        data_dir=Path(a.data_dir) if a.data_dir else None,
        lang=a.lang,
        theme=a.theme,
        fix=fix,
        fix_track=a.fix_track,
        fix_timeout_s=a.fix_timeout,
        scenario=a.scenario,
        size=(w, h),
    )


def prepare_environment(options: AppOptions) -> None:
    """Kivy reads its environment at import: set it first. httpx imports its command-line
    client (click, rich, pygments: a third of the core's import time) when those are
    installed, as on a desktop with the server's packages; the app never runs it."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    if "KIVY_HOME" not in os.environ and "ANDROID_ARGUMENT" not in os.environ:
        os.environ["KIVY_HOME"] = tempfile.mkdtemp(prefix="liandong-kivy-")
    from kivy.config import Config

    # No multisampling: text and flat rectangles gain nothing from it, and every frame pays
    # for it (a software renderer drew a third of the frames with it; cheap GPUs pay in
    # fill rate). Rounded corners are the only edges it smoothed.
    Config.set("graphics", "multisamples", "0")
    if "ANDROID_ARGUMENT" not in os.environ:
        Config.set("graphics", "width", str(options.size[0]))
        Config.set("graphics", "height", str(options.size[1]))
        Config.set("input", "mouse", "mouse,disable_multitouch")
        Config.set("kivy", "exit_on_escape", "0")


def main(argv: list[str] | None = None) -> int:
    """Run the app until its window closes."""
    options = parse(argv)
    prepare_environment(options)
    logging.basicConfig(
        level=os.environ.get("LIANDONG_APP_LOG", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from mobile.gui import LiandongApp

    LiandongApp(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
