"""The Android foreground service `Sync` (buildozer.spec `services`): python-for-android runs
this file in the service process; the core's sync loop runs there while the app is away."""

from mobile.service import main

main()
