"""Admin users: create, change role, delete (CLI) and authenticate (login). Passwords only as
Argon2 hashes. An admin JWT names its user; every request re-reads the user, so a deleted user's
tokens stop working at once and a changed role applies at once."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.core.ids import new_id
from tenants.admin.passwords import hash_password, verify_password
from tenants.admin.tokens import ROLES
from tenants.audit.service import record_event
from tenants.models import AdminUser

USERNAME_RE = re.compile(r"^[a-z0-9_.-]{2,64}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


async def get_user(session: AsyncSession, username: str) -> AdminUser | None:
    """The admin user with this username, if any."""
    if not USERNAME_RE.fullmatch(username):
        return None
    statement = select(AdminUser).where(AdminUser.username == username)
    return (await session.exec(statement)).one_or_none()


async def create_user(
    session: AsyncSession, username: str, role: str, password: str, *, actor: str = "cli"
) -> AdminUser:
    """Create an admin user (audited as `user.create`; the password never is).

    Raises:
        ValidationFailedError: bad username, role or password length (422).
        ConflictError: the username exists (409).
    """
    if not USERNAME_RE.fullmatch(username):
        raise ValidationFailedError("Usernames are 2-64 characters of a-z, 0-9, '_', '.', '-'.")
    if role not in ROLES:
        raise ValidationFailedError("The role is 'admin' or 'viewer'.")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValidationFailedError(
            f"Passwords are {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters."
        )
    if len(password.strip()) < MIN_PASSWORD_LENGTH:  # twelve spaces were a password
        raise ValidationFailedError(
            f"Passwords have at least {MIN_PASSWORD_LENGTH} characters besides blanks."
        )
    if await get_user(session, username) is not None:
        raise ConflictError(f"An admin user named '{username}' exists.")
    user = AdminUser(
        id=new_id("usr"),
        username=username,
        role=role,
        password_hash=await hash_password(password),
        created_at=utcnow(),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(f"An admin user named '{username}' exists.") from None
    await _audit(session, actor, "user.create", user, {"username": username, "role": role})
    return user


async def get_user_by_id(session: AsyncSession, user_id: str) -> AdminUser | None:
    """The admin user with this id (an admin JWT's `sub`), if it still exists."""
    return await session.get(AdminUser, user_id)


async def _require_user(session: AsyncSession, username: str) -> AdminUser:
    user = await get_user(session, username)
    if user is None:
        raise NotFoundError(f"No admin user named '{username}'.", code="user_not_found")
    return user


async def set_role(
    session: AsyncSession, username: str, role: str, *, actor: str = "cli"
) -> AdminUser:
    """Change a user's role; their tokens carry the new role from their next request."""
    if role not in ROLES:
        raise ValidationFailedError("The role is 'admin' or 'viewer'.")
    user = await _require_user(session, username)
    user.role = role
    session.add(user)
    await session.flush()
    await _audit(session, actor, "user.update", user, {"username": username, "role": role})
    return user


async def delete_user(session: AsyncSession, username: str, *, actor: str = "cli") -> AdminUser:
    """Delete a user; their admin JWTs are refused (401) from their next request."""
    user = await _require_user(session, username)
    await session.delete(user)
    await session.flush()
    await _audit(session, actor, "user.delete", user, {"username": username})
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> AdminUser | None:
    """The user if the password matches; None otherwise (same cost for unknown users)."""
    user = await get_user(session, username)
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    ok = await verify_password(password, user.password_hash if user else None)
    return user if ok else None


async def _audit(
    session: AsyncSession, actor: str, action: str, user: AdminUser, details: dict[str, str]
) -> None:
    """Record the user change's audit event in its unit of work (never the password)."""
    await record_event(
        session,
        actor=actor,
        action=action,
        target_type="admin_user",
        target_id=user.id,
        details=details,
    )
