-- Hand-written: short leases, renewed by their holder, with a generation for fencing.
--
-- Whoever works on a tunnel that is `creating` or `ending` (its create, the one teardown)
-- holds its lease: `lease_expires_at` is pushed forward by the holder every third of a
-- lease, and `lease_generation` grows by one whenever someone takes the work over. Every
-- write the holder makes is conditional on the generation it took, so a holder whose lease
-- lapsed and was taken over cannot write anything afterwards.
--
-- `delete_requested_at` records a DELETE that landed while the tunnel was still being
-- created: the create sees it, undoes what it made and ends the row itself, so the DELETE
-- never races it.
ALTER TABLE "tunnels"
    ADD COLUMN "lease_generation" INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN "lease_expires_at" TIMESTAMPTZ(3),
    ADD COLUMN "delete_requested_at" TIMESTAMPTZ(3);

-- The create takes the first lease (generation 1) in the statement that inserts the row.
DROP FUNCTION "insert_live_tunnel"(INTEGER, INTEGER, UUID, TEXT, TEXT, TEXT, INTEGER);

CREATE FUNCTION "insert_live_tunnel"(
    p_lock_namespace INTEGER,
    p_max_live INTEGER,
    p_id UUID,
    p_owner_id TEXT,
    p_slug TEXT,
    p_hostname TEXT,
    p_port INTEGER,
    p_lease_ms INTEGER
) RETURNS SETOF "tunnels"
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_namespace, hashtext(p_owner_id));
    IF (SELECT count(*) FROM "tunnels" WHERE "owner_id" = p_owner_id AND "status" <> 'ended') >= p_max_live THEN
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO "tunnels" ("id", "owner_id", "slug", "hostname", "port", "status", "lease_generation", "lease_expires_at")
        VALUES (p_id, p_owner_id, p_slug, p_hostname, p_port, 'creating', 1, clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0))
        RETURNING *;
END
$$;
