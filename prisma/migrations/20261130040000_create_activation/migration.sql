-- Hand-written: a create's activation as one function call (issue 14, create p50).
--
-- The same change TunnelRows.transition made for it (the row `creating` -> `active`, fenced
-- by the lease generation, refused after a recorded DELETE or a lapsed lease, with its
-- `created` event in the same statement), but planned once per connection: PL/pgSQL keeps
-- the plans of its statements, where the ad hoc CTE was parsed and planned again on every
-- create (about a quarter of a millisecond of the server's time, on the critical path). The
-- call is an unnamed statement, as before, so PgBouncer in transaction mode is unaffected.
-- `status::text` keeps the planner on the primary key, as in TunnelRows.transition.
CREATE FUNCTION "activate_created_tunnel"(
    p_id UUID,
    p_generation INTEGER,
    p_updated_at TIMESTAMPTZ,
    p_cf_tunnel_id UUID,
    p_dns_record_id TEXT,
    p_access_app_id TEXT,
    p_access_policy_id TEXT,
    p_actor TEXT,
    p_details JSONB
) RETURNS SETOF "tunnels"
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_row "tunnels";
BEGIN
    UPDATE "tunnels" SET
        "status" = 'active',
        "updated_at" = p_updated_at,
        "cf_tunnel_id" = p_cf_tunnel_id,
        "dns_record_id" = p_dns_record_id,
        "lease_expires_at" = NULL,
        "access_app_id" = p_access_app_id,
        "access_policy_id" = p_access_policy_id
    WHERE "id" = p_id
      AND "status"::text = 'creating'
      AND "lease_generation" = p_generation
      AND "delete_requested_at" IS NULL
      AND "lease_expires_at" > clock_timestamp()
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO "tunnel_events" ("tunnel_id", "type", "actor", "details") VALUES (p_id, 'created', p_actor, p_details);
    RETURN NEXT v_row;
END
$$;
