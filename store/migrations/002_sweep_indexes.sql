-- The sweeper finds expired reservations and, when an entry TTL is set, stale
-- entries by these columns; without the indexes every sweep would scan the
-- whole table. Plain CREATE INDEX (not CONCURRENTLY: migrations run in a
-- transaction) blocks writes while it builds, which on a young table is brief.

CREATE INDEX reservations_expires_at_idx ON reservations (expires_at);

CREATE INDEX cache_entries_last_updated_at_idx ON cache_entries (last_updated_at);
