-- The layout of a Flyte cache service database, as Flyte's cache service
-- migration leaves it (flyteorg/flyte at 6fadb90d65af:
-- cache_service/migrations/sql/20260408110000_init_schema.sql, applied by
-- flytestdlib/database's migrator, which records it in schema_migrations).
-- Written from those facts for the import tests; column names, types,
-- defaults and indexes are Flyte's.

CREATE TABLE schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- key is Flyte's joined project-domain-key; metadata is the serialized
-- flyteidl2.cacheservice.Metadata message.
CREATE TABLE cache_service_outputs (
    key          VARCHAR(512) PRIMARY KEY,
    output_uri   TEXT         NOT NULL DEFAULT '',
    metadata     BYTEA,
    last_updated TIMESTAMPTZ  NOT NULL,
    created_at   TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at   TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_cache_service_outputs_last_updated ON cache_service_outputs (last_updated);

-- Reservation keys are "reservation:" followed by the joined key.
CREATE TABLE cache_service_reservations (
    key               VARCHAR(512) PRIMARY KEY,
    owner_id          TEXT         NOT NULL,
    heartbeat_seconds INTEGER      NOT NULL DEFAULT 0,
    expires_at        TIMESTAMPTZ  NOT NULL,
    created_at        TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at        TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_cache_service_reservations_owner_id ON cache_service_reservations (owner_id);
CREATE INDEX idx_cache_service_reservations_expires_at ON cache_service_reservations (expires_at);

INSERT INTO schema_migrations (version) VALUES ('cache_service/20260408110000_init_schema');
