"""`POST /admin/login`: an admin user's OAuth2 password form -> a short-lived admin JWT.

Failed logins count against the client address in the same failure limiter as bad tenant
credentials (the app state's `auth_failures`): past the limit the address
gets 429 before any password is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.errors import AuthenticationFailedError
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.auth import refuse_tenant_credentials
from tenants.admin.failures import admin_address, failure_limiter
from tenants.admin.tokens import issue_admin_token
from tenants.admin.users import authenticate

router = APIRouter(route_class=JsonBodyRoute)


class LoginToken(BaseModel):
    """The answer to a successful login."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 token type)
    expires_in: int


@dataclass(frozen=True, slots=True)
class LoginForm:
    """The OAuth2 password form's fields the login reads."""

    username: str
    password: str


async def login_form(
    username: Annotated[str, Form(min_length=1)],
    password: Annotated[str, Form(min_length=1)],
    # An enum, not a `^password$` pattern: a JSON Schema `$` never matches before a newline.
    grant_type: Annotated[Literal["password"] | SkipJsonSchema[None], Form()] = None,
) -> LoginForm:
    """The OAuth2 password form (`grant_type=password`, `username`, `password`); an async
    dependency, so it is not run in the thread pool."""
    return LoginForm(username=username, password=password)


@router.post("/login", response_model=LoginToken, dependencies=[Depends(refuse_tenant_credentials)])
async def login(
    request: Request,
    form: Annotated[LoginForm, Depends(login_form)],
    session: SessionDep,
    settings: SettingsDep,
) -> LoginToken:
    """Exchange `username` + `password` (form fields) for an admin bearer token (never cached:
    `Cache-Control: no-store`, as OAuth 2.0 token responses are, like every /admin answer)."""
    limiter = failure_limiter(request)
    address = admin_address(request)
    limiter.check(address)
    user = await authenticate(session, form.username, form.password)
    if user is None:
        await limiter.failed(address)
        raise AuthenticationFailedError("Invalid username or password.", code="invalid_credentials")
    token, ttl = issue_admin_token(
        settings, user_id=user.id, username=user.username, role=user.role
    )
    return LoginToken(access_token=token, expires_in=ttl)
