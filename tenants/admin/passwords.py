"""Admin password hashing: passlib's Argon2 scheme (argon2-cffi), nothing else.

Hashing costs ~0.1 s of CPU, so it never runs on the event loop: `hash_password` and
`verify_password` run in a small dedicated thread pool (its size bounds the CPU that logins can
take; the login rate limit bounds the queue).
"""

from __future__ import annotations

import asyncio
import warnings
from concurrent.futures import ThreadPoolExecutor

with warnings.catch_warnings():
    # passlib 1.7.4 imports the deprecated `crypt` module and reads `argon2.__version__`.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.context import CryptContext

    _context = CryptContext(schemes=["argon2"])
    _context.handler("argon2").set_backend()

MAX_CONCURRENT_HASHES = 2
_pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_HASHES, thread_name_prefix="argon2")
# Verified against when the username is unknown, so both answers take the same time.
_DUMMY_HASH = _context.hash("not-a-real-password-but-same-cost")


async def hash_password(password: str) -> str:
    """The Argon2id hash of `password` (computed off the event loop)."""
    loop = asyncio.get_running_loop()
    hashed: str = await loop.run_in_executor(_pool, _context.hash, password)
    return hashed


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether `password` matches; `None` (unknown user) costs the same and is False."""
    loop = asyncio.get_running_loop()
    target = password_hash if password_hash is not None else _DUMMY_HASH
    matched: bool = await loop.run_in_executor(_pool, _context.verify, password, target)
    return matched and password_hash is not None
