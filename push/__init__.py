"""Push delivery: FCM and Web Push adapters, the transactional-outbox worker, CAP 1.2 warnings.

Framework-free: nothing here imports the server, the phone app or Litestar. See docs/push.md.
"""
