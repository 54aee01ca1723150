"""SQLite schema, as numbered migrations. Append new ones; never edit a released one.

``PRAGMA user_version`` records how many have been applied (see ``sqlite_connection.migrate``).
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: accounts and credentials
    """
    CREATE TABLE clinics (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX clinics_name ON clinics (name_key);
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        clinic_id TEXT REFERENCES clinics (id),
        time_zone TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX users_clinic ON users (clinic_id, created_at);
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
    CREATE TABLE revoked_families (
        family_id TEXT PRIMARY KEY,
        revoked_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        clinic_id TEXT NOT NULL REFERENCES clinics (id),
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX api_keys_clinic ON api_keys (clinic_id, created_at);
    CREATE TABLE device_grants (
        device_code_hash TEXT PRIMARY KEY,
        user_code TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        interval INTEGER NOT NULL,
        status TEXT NOT NULL,
        user_id TEXT,
        last_poll_at TEXT
    );
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        public_jwk TEXT NOT NULL,
        created_at TEXT NOT NULL,
        retire_at TEXT
    );
    CREATE TABLE login_failures (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        last_at TEXT NOT NULL
    )
    """,
    # 2: scheduling
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        start_at TEXT NOT NULL,
        end_at TEXT NOT NULL,
        site_id TEXT NOT NULL,
        clinic_id TEXT,
        status TEXT NOT NULL,
        series_id TEXT,
        doc BLOB NOT NULL
    );
    CREATE INDEX sessions_time ON sessions (start_at, end_at);
    CREATE INDEX sessions_site ON sessions (site_id, start_at);
    CREATE INDEX sessions_clinic ON sessions (clinic_id, start_at);
    CREATE INDEX sessions_series ON sessions (series_id);
    CREATE TABLE session_members (
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (session_id, user_id)
    );
    CREATE INDEX session_members_user ON session_members (user_id);
    CREATE TABLE availability (
        clinician_id TEXT PRIMARY KEY,
        clinic_id TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE TABLE sites (
        id TEXT PRIMARY KEY,
        doc BLOB NOT NULL
    );
    CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE INDEX invites_session ON invites (session_id);
    CREATE TABLE feed_tokens (
        user_id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE
    );
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        clinic_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        endpoint_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL,
        delivered_at TEXT,
        doc BLOB NOT NULL
    );
    CREATE INDEX deliveries_pending ON deliveries (delivered_at, endpoint_id, session_id, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        at TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE INDEX audit_session ON audit (session_id, seq);
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until TEXT NOT NULL
    );
    CREATE TABLE once_marks (
        key TEXT PRIMARY KEY,
        until TEXT NOT NULL
    )
    """,
    # 3: trusted contacts (auto-answer on a TV)
    """
    CREATE TABLE trusted_contacts (
        user_id TEXT PRIMARY KEY,
        doc BLOB NOT NULL
    )
    """,
)
