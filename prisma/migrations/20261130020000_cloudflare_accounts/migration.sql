-- Hand-written: more than one Cloudflare account, and each account's tunnel capacity (issue 14).
--
-- `cf_account_id` is the Cloudflare account the tunnel, its DNS record and its Access objects
-- live in: teardown, the reaper and the reconciler use that account's token and request
-- budget, never "the current default". NULL marks rows made before this migration (or by a
-- broker that predates it): they belong to the primary account, the one the single-account
-- variables name (the first of CLOUDFLARE_ACCOUNTS); the broker refuses to boot if live ones
-- are not under that account's TUNNEL_DOMAIN (src/cloudflare/account-coverage.ts).
ALTER TABLE "tunnels" ADD COLUMN "cf_account_id" TEXT;

-- The count per account at insert time reads only live rows.
CREATE INDEX "tunnels_live_account_idx" ON "tunnels" ("cf_account_id") WHERE "status" <> 'ended';

-- Inserts a `creating` row in an account with room, or nothing:
--  * the per-user limit, as before: under the user's advisory lock, count and insert;
--  * the per-account capacity: under one placement lock (taken after the user's, always in
--    that order, so no deadlock), count the live rows of every candidate account, pick the
--    least loaded one still below its capacity (ties: the order given), and insert there.
-- One placement lock for all accounts rather than one per account: picking the least loaded
-- account needs every count at once, and locking several accounts one by one in load order
-- could deadlock. It serialises only the count and the insert (about a millisecond), far
-- above the few creates per second that Cloudflare's request budget allows per account.
-- Returns the row with `cf_account_id` set; no row when the user is at their limit; raises
-- SQLSTATE TBCAP when every account is full (mapped by TunnelRows.insertLive).
CREATE FUNCTION "insert_live_tunnel_placed"(
    p_user_lock_namespace INTEGER,
    p_max_live INTEGER,
    p_placement_lock_namespace INTEGER,
    p_accounts TEXT[],
    p_capacities INTEGER[],
    p_domains TEXT[],
    p_primary_account TEXT,
    p_id UUID,
    p_owner_id TEXT,
    p_slug TEXT,
    p_port INTEGER,
    p_lease_ms INTEGER
) RETURNS SETOF "tunnels"
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_index INTEGER;
BEGIN
    PERFORM pg_advisory_xact_lock(p_user_lock_namespace, hashtext(p_owner_id));
    IF (SELECT count(*) FROM "tunnels" WHERE "owner_id" = p_owner_id AND "status" <> 'ended') >= p_max_live THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_placement_lock_namespace, 0);
    SELECT a.i INTO v_index
    FROM unnest(p_accounts, p_capacities) WITH ORDINALITY AS a(account, capacity, i)
    CROSS JOIN LATERAL (
        -- Two counts, each an index-only range of tunnels_live_account_idx. NULL: a row from
        -- before accounts were recorded, which is the primary account's.
        SELECT (SELECT count(*) FROM "tunnels" t WHERE t."status" <> 'ended' AND t."cf_account_id" = a.account)
             + CASE WHEN a.account = p_primary_account
                    THEN (SELECT count(*) FROM "tunnels" t WHERE t."status" <> 'ended' AND t."cf_account_id" IS NULL)
                    ELSE 0 END AS live
    ) c
    WHERE c.live < a.capacity
    ORDER BY c.live::float8 / a.capacity, a.i
    LIMIT 1;
    IF v_index IS NULL THEN
        RAISE EXCEPTION 'every Cloudflare account is at its tunnel capacity' USING ERRCODE = 'TBCAP';
    END IF;
    RETURN QUERY
        INSERT INTO "tunnels" ("id", "owner_id", "slug", "hostname", "port", "status", "lease_generation", "lease_expires_at", "cf_account_id")
        VALUES (p_id, p_owner_id, p_slug, p_slug || '.' || p_domains[v_index], p_port, 'creating', 1,
                clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0), p_accounts[v_index])
        RETURNING *;
END
$$;
