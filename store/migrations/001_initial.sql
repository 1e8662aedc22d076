-- Entries and reservations are keyed by the four parts of their identity as
-- separate columns, never by a joined string, so that no two scopes collide.

CREATE TABLE cache_entries (
    org             text        NOT NULL,
    project         text        NOT NULL,
    domain          text        NOT NULL,
    key             text        NOT NULL,
    -- Exactly one of output_uri and output_inline is set.
    output_uri      text,
    output_inline   bytea,
    source_name     text        NOT NULL DEFAULT '',
    source_version  text        NOT NULL DEFAULT '',
    labels          jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    last_updated_at timestamptz NOT NULL,
    PRIMARY KEY (org, project, domain, key),
    CHECK ((output_uri IS NULL) <> (output_inline IS NULL))
);

CREATE TABLE reservations (
    org                   text        NOT NULL,
    project               text        NOT NULL,
    domain                text        NOT NULL,
    key                   text        NOT NULL,
    owner_id              text        NOT NULL,
    -- Nanoseconds: an interval column would round to microseconds.
    heartbeat_interval_ns bigint      NOT NULL,
    expires_at            timestamptz NOT NULL,
    PRIMARY KEY (org, project, domain, key)
);
