"""The PostgreSQL store's schema: numbered migrations, the connection, the state query.

``migrations`` records which numbered migrations have run; they are applied under an
advisory lock, so replicas starting together do not race. Migration 3 adds the ``state``
table whose change counters (bumped by statement triggers on ``requests`` and ``samples``)
tell a replica's saved index whether it still matches the database
(:class:`lethe.store.indexed.IndexedStore`).
"""

from __future__ import annotations

import logging
import re

from lethe.errors import StoreError

log = logging.getLogger("lethe.store.postgres")

_ADVISORY_KEY = 0x1E7E5701  # pg_advisory_xact_lock key for migrations
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

# (version, name, SQL with {s} for the quoted schema name). Append only; never edit.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial tables",
        """
        CREATE TABLE {s}.meta (key text PRIMARY KEY, value bytea NOT NULL);
        CREATE TABLE {s}.requests (
            id text PRIMARY KEY,
            kind text NOT NULL,
            subject text,
            policy text,
            entities jsonb NOT NULL DEFAULT '[]'::jsonb,
            n_prompts integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            revoked_at double precision
        );
        CREATE TABLE {s}.samples (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL REFERENCES {s}.requests(id),
            role text NOT NULL,
            text text,
            embedding bytea NOT NULL
        );
        CREATE INDEX samples_request ON {s}.samples (request_id);
        """,
    ),
    (
        2,
        "partial index on live requests",
        "CREATE INDEX requests_live ON {s}.requests (created_at) WHERE revoked_at IS NULL;",
    ),
    (
        3,
        "store id and change counters for local index caches",
        """
        CREATE TABLE {s}.state (k text PRIMARY KEY, n bigint NOT NULL);
        INSERT INTO {s}.state VALUES ('store_id', (random() * 9e18)::bigint), ('changes', 0), ('rewrites', 0);
        CREATE FUNCTION {s}.count_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN UPDATE {s}.state SET n = n + 1 WHERE k = TG_ARGV[0]; RETURN NULL; END $$;
        CREATE TRIGGER requests_count AFTER INSERT OR UPDATE OR DELETE ON {s}.requests
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_change('changes');
        CREATE TRIGGER samples_count AFTER UPDATE OR DELETE ON {s}.samples
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_change('rewrites');
        """,
    ),
]
STATE = ("SELECT (SELECT n FROM {s}.state WHERE k='store_id'), (SELECT n FROM {s}.state WHERE k='changes'),"
         " (SELECT n FROM {s}.state WHERE k='rewrites'), (SELECT coalesce(max(id), 0) FROM {s}.samples)")


def first_line(exc: BaseException) -> str:
    """The first line of a driver error (psycopg's carry context on the lines after it)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def connect(dsn: str):
    """An autocommit connection; :class:`StoreError` (password redacted) when the server refuses."""
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL ({redact(dsn)}): {first_line(exc)}") from None


def redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)


def migrate(conn, s: str) -> None:
    """Create the schema ``s`` (quoted) and apply the migrations it lacks, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute(f"SELECT version FROM {s}.migrations").fetchall()}
        for version, name, ddl in MIGRATIONS:
            if version in done:
                continue
            conn.execute(ddl.format(s=s))
            conn.execute(f"INSERT INTO {s}.migrations (version, name) VALUES (%s, %s)", (version, name))
            log.info("applied store migration %d (%s)", version, name)
        newest = max(done | {v for v, _, _ in MIGRATIONS})
        if newest > MIGRATIONS[-1][0]:
            raise StoreError(
                f"the PostgreSQL store is at schema version {newest}, newer than this Lethe "
                f"({MIGRATIONS[-1][0]}): upgrade Lethe"
            )
