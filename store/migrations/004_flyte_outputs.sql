-- Flyte's cache API stores two things cacheservice.v1 has no column for: a
-- LiteralMap by value (a third kind of output) and Flyte's six-field source
-- identifier.
--
-- The LiteralMap's bytes go into output_inline, and literals marks them as a
-- LiteralMap. A replica of the previous version, still running during a
-- rolling upgrade, reads the row with its unchanged query (output_uri NULL,
-- output_inline the LiteralMap's exact bytes) and serves it as an inline hit
-- of those bytes: the same answer this version gives through cacheservice.v1.
-- A separate output_literals column would have left both old output columns
-- NULL, which that replica serves as an empty inline hit, and a CHECK it does
-- not know would make its Puts fail.
--
-- One case is an empty hit on every version: an empty LiteralMap (a task
-- without outputs) marshals to zero bytes, so the previous version, and this
-- one through cacheservice.v1, serve it as an empty inline output. Those zero
-- bytes are the LiteralMap, exactly: decoded, they are the empty LiteralMap
-- that was stored, so the answer is true, only not labelled as literals.
--
-- The previous version's Put replaces output_uri, output_inline and
-- last_updated_at without knowing these columns, so a flag alone would
-- survive its overwrite and call its bytes (or nothing, after a URI) a
-- LiteralMap, and flyte_source would describe an older write. So every Put of
-- this version also copies the last_updated_at it writes into
-- flyte_written_at, and readers trust literals and flyte_source only while
-- flyte_written_at = last_updated_at: the previous version's overwrite moves
-- last_updated_at (the database's clock, in microseconds) and leaves the copy
-- behind. Comparing two timestamps costs nothing per Get, unlike a digest of
-- up to a megabyte of output.
--
-- Nullable columns without defaults: adding them rewrites no rows, and rows
-- from before this migration (NULL flyte_written_at) are neither.

ALTER TABLE cache_entries
    ADD COLUMN flyte_written_at timestamptz,
    ADD COLUMN literals         boolean,
    -- A serialized flyteidl2.core.Identifier, kept as sent (all six fields,
    -- resource type included); NULL when written through cacheservice.v1.
    ADD COLUMN flyte_source     bytea;
