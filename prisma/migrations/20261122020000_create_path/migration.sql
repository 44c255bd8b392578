-- Hand-written: a create's quota check and insert in one round trip.
--
-- The advisory lock serialises one user's creates; the count must then see every create of
-- theirs committed before the lock was granted. A single statement cannot do both (its
-- snapshot predates the lock), but a VOLATILE function's statements each take a fresh
-- snapshot, so the count below runs after the lock, as a second statement in an explicit
-- transaction would, without the extra round trips. Returns the new row, or no row when the
-- user already has p_max_live tunnels that are not ended. A slug taken by a live tunnel
-- raises unique_violation on tunnels_live_slug_key, as the plain INSERT does.
CREATE FUNCTION "insert_live_tunnel"(
    p_lock_namespace INTEGER,
    p_max_live INTEGER,
    p_id UUID,
    p_owner_id TEXT,
    p_slug TEXT,
    p_hostname TEXT,
    p_port INTEGER
) RETURNS SETOF "tunnels"
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_namespace, hashtext(p_owner_id));
    IF (SELECT count(*) FROM "tunnels" WHERE "owner_id" = p_owner_id AND "status" <> 'ended') >= p_max_live THEN
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO "tunnels" ("id", "owner_id", "slug", "hostname", "port", "status")
        VALUES (p_id, p_owner_id, p_slug, p_hostname, p_port, 'creating')
        RETURNING *;
END
$$;
