"""argon2id password hashes.

argon2 is deliberately slow (tens to hundreds of milliseconds of CPU per hash or check), so a
request never runs it on the event loop: `hash_password_async` and `verify_password_async` run
it in a worker thread (argon2-cffi releases the GIL meanwhile), at most `PASSWORD_THREADS` at
once per process and event loop. A login storm then queues for those threads instead of
blocking every other request, and cannot take the loop's shared thread pool (anyio's default
limiter, which file and DNS work use) either. The synchronous functions remain for the command
line (seed-demo) and benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import weakref

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps the time of a login for an unknown user like that of a known one.
_DUMMY = _hasher.hash("liandong-timing-equaliser")
# Half the cores (at least one): the rest stay for the event loop and the database.
PASSWORD_THREADS = max(1, (os.cpu_count() or 1) // 2)
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (blocks: off the event loop use `hash_password_async`)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; takes about as long whether or not the user exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_limiter() -> anyio.CapacityLimiter:
    """The running event loop's limiter for password threads (`PASSWORD_THREADS` tokens)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(PASSWORD_THREADS)
    return limiter


async def hash_password_async(password: str) -> str:
    """`hash_password` in a bounded worker thread."""
    return await anyio.to_thread.run_sync(hash_password, password, limiter=password_limiter())


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """`verify_password` in a bounded worker thread."""
    return await anyio.to_thread.run_sync(
        verify_password, password_hash, password, limiter=password_limiter()
    )
