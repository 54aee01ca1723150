"""Pure rules of who may see and change which session."""

from __future__ import annotations

from broker.domain import Role
from broker.policy import Principal
from broker.scheduling.model import ParticipantRole, Session, SessionKind


def can_see(p: Principal, s: Session) -> bool:
    if s.clinic_id is not None and p.clinic_id == s.clinic_id and (p.is_staff or p.api_key):
        return True
    return s.role_of(p.subject) is not None


def can_change(p: Principal, s: Session) -> bool:
    """Reschedule or cancel: the clinic for check-ups (and the patient in it); the people
    in a family call."""
    if s.kind is SessionKind.CHECKUP:
        if s.clinic_id is not None and p.clinic_id == s.clinic_id and (p.is_staff or p.api_key):
            return True
        return s.role_of(p.subject) is ParticipantRole.PATIENT
    return s.role_of(p.subject) in (ParticipantRole.HOST, ParticipantRole.FAMILY)


def can_host(p: Principal, s: Session) -> bool:
    """Invite guests, read the audit trail, end the session."""
    if s.clinic_id is not None and p.clinic_id == s.clinic_id and (p.is_staff or p.api_key):
        return True
    return s.role_of(p.subject) is ParticipantRole.HOST


def can_book_checkup(p: Principal, clinic_id: str) -> bool:
    return p.clinic_id == clinic_id and (p.is_staff or p.api_key)


def can_book_family_call(p: Principal) -> bool:
    return p.role in (Role.FAMILY, Role.PATIENT)


def can_edit_availability(p: Principal, clinician_id: str, clinic_id: str) -> bool:
    if p.clinic_id != clinic_id:
        return False
    return p.role is Role.ADMIN or (p.role is Role.CLINICIAN and p.subject == clinician_id)
