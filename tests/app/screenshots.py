"""`make screenshots`: a PNG of every app screen in Chinese and English, with realistic demo
content, in `var/screenshots/<screen>-<lang>.png` (the start screen of each role as
`home-<lang>.png` (responder), `home_inspector-<lang>.png`, `home_enterprise-<lang>.png`).

Runs a real `liandong serve` on a scratch database, the app under Xvfb, one run per role."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests.app import content
from tests.app.harness import PASSWORD, ROOT, demo_server, run_app, xvfb

#: which role's run shows each screen
SOURCES = {
    "fire1": ("home", "task", "nearby", "warnings", "outbox", "settings"),
    "inspector1": ("home", "hazard_report", "hazard_detail"),
    "enterprise1": ("home", "selfcheck"),
}


def main(out: Path = ROOT / "var" / "screenshots") -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shots-") as tmp:
        root = Path(tmp)
        with demo_server(root / "server") as base, xvfb() as display:
            content.dispatch_fire(base)
            hazards = content.report_hazards(base, 4)
            content.assign_to_enterprise(base, hazards[0]["id"])
            content.rectify_over_rest(base, hazards[0]["id"])
            content.assign_to_enterprise(base, hazards[1]["id"])
            content.publish_warnings(base)
            raw = root / "raw"
            for user, screens in SOURCES.items():
                r = run_app(
                    display,
                    "screenshots",
                    server=base,
                    data_dir=root / user,
                    args=("--user", user, "--password", PASSWORD, "--fix-track"),
                    LIANDONG_APP_SHOTS=str(raw / user),
                )
                if not r["ok"]:
                    print(r["error"], file=sys.stderr)
                    return 1
                for screen in screens:
                    name = screen if user == "fire1" or screen != "home" else f"home_{user[:-1]}"
                    name = name.replace("home_enterprise", "home_enterprise")
                    for lang in ("zh", "en"):
                        shutil.copyfile(
                            raw / user / f"{screen}-{lang}.png", out / f"{name}-{lang}.png"
                        )
            r = run_app(
                display,
                "signin_shots",
                server=base,
                data_dir=root / "fresh",
                LIANDONG_APP_SHOTS=str(raw / "fresh"),
            )
            for lang in ("zh", "en"):
                shutil.copyfile(raw / "fresh" / f"signin-{lang}.png", out / f"signin-{lang}.png")
    for p in sorted(out.glob("*.png")):
        print(p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
