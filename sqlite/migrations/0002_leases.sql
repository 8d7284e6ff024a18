-- Leases and fenced task state (RFC-0016 §4.6, §9).
--
-- Lease rows are kept after they end, for audit and so that the highest fence of every
-- scope survives restarts. At most one lease per scope is active: the partial unique
-- index enforces it in the store too, not only in the engine.

CREATE TABLE leases (
    lease_id    TEXT    NOT NULL PRIMARY KEY,
    scope       TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    fence       INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    acquired_at TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    ttl_seconds INTEGER NOT NULL,
    ended_at    TEXT,
    reason      TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE UNIQUE INDEX leases_one_active_per_scope ON leases (scope) WHERE status = 'active';
CREATE UNIQUE INDEX leases_scope_fence ON leases (scope, fence);
CREATE INDEX leases_agent_id ON leases (agent_id, lease_id);
CREATE INDEX leases_status ON leases (status, lease_id);

CREATE TABLE tasks (
    task_id    TEXT    NOT NULL PRIMARY KEY,
    agent_id   TEXT    NOT NULL,
    lease_id   TEXT    NOT NULL,
    fence      INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    progress   INTEGER NOT NULL,
    message    TEXT    NOT NULL DEFAULT '',
    result     TEXT,
    error      TEXT    NOT NULL DEFAULT '',
    updated_at TEXT    NOT NULL
) STRICT;
