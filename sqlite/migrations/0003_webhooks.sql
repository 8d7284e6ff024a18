-- Webhooks: HTTP endpoints that receive signed event deliveries.
--
-- The signing secret is stored as given (deliveries are signed with it, so it cannot be
-- hashed); it is returned by the API only once, when the webhook is created. events is
-- the JSON array of subscribed event types. Delivery attempts are not stored: the
-- server keeps the recent ones in memory.

CREATE TABLE webhooks (
    id         TEXT NOT NULL PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX webhooks_created_at_id ON webhooks (created_at, id);
