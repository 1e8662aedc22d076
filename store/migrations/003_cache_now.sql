-- One clock (docs/ARCHITECTURE.md, "The clock"): every time that decides anything (lease
-- expiry and takeover, max_age, created/updated timestamps, the sweeper's
-- cutoffs) is read from this function, so replicas whose own clocks disagree
-- still agree, and tests can move time without sleeping.
--
-- clock_timestamp(), not now(): now() is the transaction's start, which for a
-- claim is before it waited for the row lock. The function is VOLATILE, as
-- clock_timestamp() is: a STABLE one may be evaluated once, before a lock
-- wait, and its value reused after it.
--
-- cacheservice.clock_offset is a session setting for tests only: an interval
-- added to the clock (set in the connection string, or with ALTER DATABASE
-- ... SET for new sessions). Unset or empty is zero; production never sets
-- it. The body is a single expression, so PostgreSQL inlines it.
CREATE OR REPLACE FUNCTION cache_now() RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT clock_timestamp()
        + coalesce(nullif(current_setting('cacheservice.clock_offset', true), '')::interval, interval '0')
$$;
