-- Hand-written: Cloudflare Access in front of tunnel URLs (issue 12).
--
-- `access_mode` is who may open the tunnel's URL: the team (the wildcard team gate covers
-- it), the public, or the addresses in `access_emails`. Rows from before Access were public.
-- `access_app_id` / `access_policy_id` are the tunnel's own Access application and reusable
-- policy (only a tunnel whose audience differs from the team's has them), saved as each is
-- made so that ending the tunnel knows exactly what to remove.
CREATE TYPE "tunnel_access_mode" AS ENUM ('team', 'public', 'emails');

ALTER TABLE "tunnels"
    ADD COLUMN "access_mode" "tunnel_access_mode" NOT NULL DEFAULT 'public',
    ADD COLUMN "access_emails" TEXT[] NOT NULL DEFAULT ARRAY[]::TEXT[],
    ADD COLUMN "access_app_id" TEXT,
    ADD COLUMN "access_policy_id" TEXT;

ALTER TYPE "tunnel_event_type" ADD VALUE 'access_changed';
