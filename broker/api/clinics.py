"""Clinics: their staff and their API keys."""

from __future__ import annotations

from aiohttp import web

from broker.accounts import NewUser
from broker.api import schemas as s
from broker.api.context import services
from broker.api.web import Route, no_content, principal, read_body, respond
from broker.domain import Role
from broker.errors import PermissionDenied
from broker.policy import can_read_clinic


async def get_clinic(request: web.Request) -> web.Response:
    clinic_id = request.match_info["clinic_id"]
    if not can_read_clinic(principal(request), clinic_id):
        raise PermissionDenied("not a member of this clinic")
    return respond(s.ClinicOut.of(await services(request).accounts.get_clinic(clinic_id)))


async def list_staff(request: web.Request) -> web.Response:
    staff = await services(request).accounts.list_staff(
        principal(request), request.match_info["clinic_id"]
    )
    return respond(s.UserList(items=[s.UserOut.of(u) for u in staff]))


async def add_staff(request: web.Request) -> web.Response:
    body = await read_body(request, s.StaffRequest)
    user = await services(request).accounts.add_staff(
        principal(request),
        request.match_info["clinic_id"],
        NewUser(
            body.email, body.password, body.display_name, Role(body.role), time_zone=body.time_zone
        ),
    )
    return respond(s.UserOut.of(user), 201)


async def create_api_key(request: web.Request) -> web.Response:
    body = await read_body(request, s.ApiKeyRequest)
    issued = await services(request).api_keys.create_for(
        principal(request), request.match_info["clinic_id"], body.name
    )
    return respond(s.ApiKeyCreated(key=s.ApiKeyOut.of(issued.key), secret=issued.token), 201)


async def list_api_keys(request: web.Request) -> web.Response:
    keys = await services(request).api_keys.list_for(
        principal(request), request.match_info["clinic_id"]
    )
    return respond(s.ApiKeyList(items=[s.ApiKeyOut.of(k) for k in keys]))


async def revoke_api_key(request: web.Request) -> web.Response:
    await services(request).api_keys.revoke_for(
        principal(request), request.match_info["clinic_id"], request.match_info["key_id"]
    )
    return no_content()


_CLINIC = "/api/v1/clinics/{clinic_id}"
ROUTES = (
    Route(
        "GET",
        _CLINIC,
        get_clinic,
        "A clinic you belong to",
        "clinics",
        auth="user_or_key",
        response=s.ClinicOut,
        errors=(401, 403, 404),
    ),
    Route(
        "GET",
        _CLINIC + "/staff",
        list_staff,
        "The clinic's admins and clinicians",
        "clinics",
        auth="user_or_key",
        response=s.UserList,
        errors=(401, 403),
    ),
    Route(
        "POST",
        _CLINIC + "/staff",
        add_staff,
        "Add an admin or clinician (admins only)",
        "clinics",
        auth="user",
        body=s.StaffRequest,
        response=s.UserOut,
        status=201,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "GET",
        _CLINIC + "/api-keys",
        list_api_keys,
        "The clinic's API keys (admins only)",
        "clinics",
        auth="user",
        response=s.ApiKeyList,
        errors=(401, 403),
    ),
    Route(
        "POST",
        _CLINIC + "/api-keys",
        create_api_key,
        "Create an API key for a clinic system; the secret is shown once",
        "clinics",
        auth="user",
        body=s.ApiKeyRequest,
        response=s.ApiKeyCreated,
        status=201,
        errors=(401, 403, 404, 422),
    ),
    Route(
        "DELETE",
        _CLINIC + "/api-keys/{key_id}",
        revoke_api_key,
        "Revoke an API key",
        "clinics",
        auth="user",
        status=204,
        errors=(401, 403, 404),
    ),
)
