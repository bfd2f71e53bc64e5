"""Settings: language (中文 first), theme, photo size, the server, sign out."""

from __future__ import annotations

from typing import Any

from mobile.core.session import SignOut
from mobile.screens.common import FieldScreen
from mobile.ui import tr

#: longest photo edge choices (px): small for 2G, the default, full detail
PHOTO_EDGES = (1024, 2048, 3072)


class SettingsScreen(FieldScreen):
    """What the user may change."""

    def needs_data(self) -> bool:
        return False

    def show(self, data: Any) -> None:
        app = self.app
        ids = self.ids
        core = app.core
        account = core.account if core is not None else None
        ids.server.text = account.server_url if account else app.options.server
        ids.who.text = account.display_name if account else ""
        edge = int(app.prefs.get("photo_edge", 2048))
        for b in ids.edges.children:
            b.kind = "primary" if b.value == edge else "plain"
        for b in ids.langs.children:
            b.kind = "primary" if b.value == tr.lang else "plain"
        from mobile.ui import theme

        for b in ids.themes.children:
            b.kind = "primary" if b.value == theme.name else "plain"

    def set_language(self, lang: str) -> None:
        self.app.set_language(lang)

    def set_theme(self, name: str) -> None:
        self.app.set_theme(name)
        self.show(None)

    def set_edge(self, edge: int) -> None:
        self.app.save_pref("photo_edge", edge)
        if self.app.core is not None:
            self.app.core.photo_edge = edge
        self.show(None)

    def sign_out(self) -> None:
        app = self.app
        core = app.core

        async def out() -> SignOut:
            await app.stop_sending()  # no round may run on the files being wiped
            result: SignOut = core.sign_out()
            return result

        app.run_core(out, then=self._signed_out, fail=self._failed)

    def _signed_out(self, result: SignOut) -> None:
        app = self.app
        app.stack.clear()
        app.badge_text = ""
        app.open_screen("signin")
        app.stack.clear()
        if result.unsent:
            app.current.say(
                tr.n_(
                    "{n} unsent item stays on this phone until you sign in again.",
                    "{n} unsent items stay on this phone until you sign in again.",
                    result.unsent,
                )
            )


SCREEN = SettingsScreen
