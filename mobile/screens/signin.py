"""Sign in: server address, user name, password (online; the data then works offline)."""

from __future__ import annotations

from typing import Any

from mobile.core.session import AuthError, OfflineError, SignIn
from mobile.screens.common import FieldScreen
from mobile.ui import tr


class SigninScreen(FieldScreen):
    """The first screen on a phone nobody has signed in on."""

    def needs_data(self) -> bool:
        return False

    def show(self, data: Any) -> None:
        ids = self.ids
        if not ids.server.text:
            ids.server.text = self.app.options.server

    def submit(self) -> None:
        ids = self.ids
        self.sign_in(ids.server.text.strip(), ids.user.text.strip(), ids.password.text)

    def sign_in(self, server: str, user: str, password: str) -> None:
        """Sign in on the core's thread; home when it worked, the reason when not."""
        self.ids.server.text, self.ids.user.text = server, user
        if not (server and user and password):
            self.say(tr._("Enter the server, your user name and password."), alarm=True)
            return
        self.loading = True
        self.say(tr._("Signing in…"))
        self.app.run_core(
            self.app.core.sign_in, server, user, password, then=self._signed_in, fail=self._refused
        )

    def _signed_in(self, result: SignIn) -> None:
        self.loading = False
        self.ids.password.text = ""
        self.say("")
        self.app.events.append("signed-in")
        self.app.signed_in()
        if result.unsent:
            self.app.current.say(
                tr.n_(
                    "{n} item from your last session will be sent now.",
                    "{n} items from your last session will be sent now.",
                    result.unsent,
                )
            )

    def _refused(self, exc: BaseException) -> None:
        self.loading = False
        if isinstance(exc, OfflineError):
            self.say(
                tr._("The server cannot be reached. Check the address and the network."), alarm=True
            )
        elif isinstance(exc, AuthError) and exc.status == 429:
            self.say(tr._("Too many attempts. Wait a minute and try again."), alarm=True)
        elif isinstance(exc, AuthError):
            self.say(tr._("User name or password is wrong."), alarm=True)
        else:
            super()._failed(exc)


SCREEN = SigninScreen
