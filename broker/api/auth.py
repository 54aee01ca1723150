"""Accounts and login: register, login, refresh, logout, and one's own profile."""

from __future__ import annotations

from aiohttp import web

from broker.accounts import NewUser, ProfileChange
from broker.api import schemas as s
from broker.api.context import METRICS, services
from broker.api.web import Route, client_address, no_content, principal, read_body, respond
from broker.auth import TokenPair
from broker.domain import Role
from broker.errors import AuthenticationFailed, Throttled


def token_response(pair: TokenPair) -> s.TokenResponse:
    return s.TokenResponse(
        access_token=pair.access_token,
        token_type="Bearer",
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        user=s.UserOut.of(pair.user),
    )


async def register(request: web.Request) -> web.Response:
    body = await read_body(request, s.RegisterRequest)
    user = await services(request).accounts.register(
        NewUser(
            body.email, body.password, body.display_name, Role(body.role), time_zone=body.time_zone
        )
    )
    return respond(s.UserOut.of(user), 201)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, s.LoginRequest)
    svc = services(request)
    metrics = request.app[METRICS]
    try:
        user = await svc.accounts.authenticate(body.email, body.password, client_address(request))
    except Throttled:
        metrics.logins.labels("throttled").inc()
        raise
    except AuthenticationFailed:
        metrics.logins.labels("failed").inc()
        raise
    metrics.logins.labels("ok").inc()
    return respond(token_response(await svc.auth.issue_pair(user)))


async def refresh(request: web.Request) -> web.Response:
    body = await read_body(request, s.RefreshRequest)
    return respond(token_response(await services(request).auth.refresh(body.refresh_token)))


async def logout(request: web.Request) -> web.Response:
    body = await read_body(request, s.RefreshRequest)
    await services(request).auth.logout(body.refresh_token)
    return no_content()


async def get_me(request: web.Request) -> web.Response:
    user = await services(request).accounts.get_user(principal(request).subject)
    return respond(s.UserOut.of(user))


async def patch_me(request: web.Request) -> web.Response:
    body = await read_body(request, s.ProfileUpdate)
    change = ProfileChange(
        display_name=body.display_name,
        email=body.email,
        time_zone=body.time_zone,
        password=body.password,
        current_password=body.current_password,
    )
    user = await services(request).accounts.update_profile(principal(request).subject, change)
    return respond(s.UserOut.of(user))


ROUTES = (
    Route(
        "POST",
        "/api/v1/auth/register",
        register,
        "Sign up as a patient or family member",
        "auth",
        body=s.RegisterRequest,
        response=s.UserOut,
        status=201,
        errors=(409, 422),
    ),
    Route(
        "POST",
        "/api/v1/auth/login",
        login,
        "Log in with e-mail and password",
        "auth",
        body=s.LoginRequest,
        response=s.TokenResponse,
        errors=(401, 422, 429),
    ),
    Route(
        "POST",
        "/api/v1/auth/refresh",
        refresh,
        "Trade a refresh token for a new pair",
        "auth",
        body=s.RefreshRequest,
        response=s.TokenResponse,
        errors=(401, 422),
    ),
    Route(
        "POST",
        "/api/v1/auth/logout",
        logout,
        "Revoke a refresh token and its family",
        "auth",
        body=s.RefreshRequest,
        status=204,
        errors=(422,),
    ),
    Route(
        "GET",
        "/api/v1/me",
        get_me,
        "Your own profile",
        "accounts",
        auth="user",
        response=s.UserOut,
        errors=(401,),
    ),
    Route(
        "PATCH",
        "/api/v1/me",
        patch_me,
        "Change your profile (e-mail and password need the current password)",
        "accounts",
        auth="user",
        body=s.ProfileUpdate,
        response=s.UserOut,
        errors=(401, 403, 409, 422),
    ),
)
