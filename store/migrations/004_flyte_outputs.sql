-- Flyte's cache API stores two things cacheservice.v1 has no column for: a
-- LiteralMap by value (a third kind of output) and Flyte's six-field source
-- identifier.
--
-- The LiteralMap's bytes go into output_inline, and literals_sha256 marks
-- them as a LiteralMap. A replica of the previous version, still running
-- during a rolling upgrade, reads the row with its unchanged query (output_uri
-- NULL, output_inline the LiteralMap's exact bytes) and serves it as an
-- inline hit of those bytes: the same answer this version gives through
-- cacheservice.v1, never an empty hit. A separate output_literals column
-- would have left both old output columns NULL, which that replica serves as
-- an empty inline hit, and a CHECK it does not know would make its Puts fail.
--
-- The marker is a digest of the bytes rather than a flag because the
-- previous version's Put replaces output_uri and output_inline without
-- knowing these columns: a flag would survive its overwrite and call its
-- bytes (or nothing, after a URI) a LiteralMap. The digest matches only the
-- bytes it was computed from, so readers check sha256(output_inline) =
-- literals_sha256 and an overwritten row stops being a LiteralMap. For the
-- same reason readers trust flyte_source only while its name and version
-- match source_name and source_version.
--
-- Nullable columns without defaults: adding them rewrites no rows.

ALTER TABLE cache_entries
    ADD COLUMN literals_sha256 bytea,
    -- A serialized flyteidl2.core.Identifier, kept as sent (all six fields,
    -- resource type included); NULL when written through cacheservice.v1.
    ADD COLUMN flyte_source    bytea;
