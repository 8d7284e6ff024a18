-- Initial schema of the embedded store.
--
-- Times are TEXT in one fixed-width UTC form, 2006-01-02T15:04:05.000000000Z, so they
-- round-trip to the nanosecond and sort correctly as text. JSON values are TEXT.

CREATE TABLE agents (
    agent_id                TEXT    NOT NULL PRIMARY KEY,
    role_id                 TEXT    NOT NULL DEFAULT '',
    name                    TEXT    NOT NULL DEFAULT '',
    capabilities            TEXT    NOT NULL DEFAULT '[]',
    max_concurrent_tasks    INTEGER NOT NULL DEFAULT 0,
    current_load            INTEGER NOT NULL DEFAULT 0,
    status                  TEXT    NOT NULL,
    endpoint                TEXT    NOT NULL DEFAULT '',
    interval_seconds        INTEGER NOT NULL,
    unhealthy_after_seconds INTEGER NOT NULL,
    dead_after_seconds      INTEGER NOT NULL,
    metadata                TEXT    NOT NULL DEFAULT '{}',
    registered_at           TEXT    NOT NULL,
    last_heartbeat_at       TEXT    NOT NULL,
    version                 INTEGER NOT NULL,
    drain_deadline          TEXT,
    owner_key_id            TEXT    NOT NULL DEFAULT '',
    pending_command         TEXT
) STRICT;

CREATE INDEX agents_role_id ON agents (role_id);
CREATE INDEX agents_status ON agents (status);

-- events is the append-only system event log. seq is assigned by the store as
-- event_log.last_seq + 1 inside the writing transaction: gap-free, never reused, even if
-- old events are one day pruned. body is the whole event as JSON, so event types with
-- more fields need no migration; the other columns exist for filtering.
CREATE TABLE events (
    seq       INTEGER NOT NULL PRIMARY KEY,
    type      TEXT    NOT NULL,
    agent_id  TEXT    NOT NULL DEFAULT '',
    timestamp TEXT    NOT NULL,
    body      TEXT    NOT NULL
) STRICT;

CREATE INDEX events_type_seq ON events (type, seq);
CREATE INDEX events_agent_id_seq ON events (agent_id, seq);

CREATE TABLE event_log (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
) STRICT;

INSERT INTO event_log (id, last_seq) VALUES (1, 0);

CREATE TABLE keys (
    id         TEXT NOT NULL PRIMARY KEY,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;

CREATE INDEX keys_created_at_id ON keys (created_at, id);
