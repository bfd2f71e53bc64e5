"""buildozer's entry point: the Liandong field app (`mobile/app.py`)."""

from mobile.app import main

main()
