"""SQLite schema, as numbered migrations. Append new ones; never edit a released one.

``PRAGMA user_version`` records how many have been applied (see ``sqlite.migrate``).
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
)
