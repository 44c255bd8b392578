-- CreateEnum
CREATE TYPE "tunnel_event_type" AS ENUM ('created', 'create_failed', 'heartbeat_lapsed', 'delete_requested', 'ended', 'end_failed', 'orphan_removed');

-- CreateTable
CREATE TABLE "tunnel_events" (
    "id" BIGSERIAL NOT NULL,
    "tunnel_id" UUID NOT NULL,
    "type" "tunnel_event_type" NOT NULL,
    "actor" TEXT NOT NULL,
    "details" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "tunnel_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "tunnel_events_tunnel_id_created_at_idx" ON "tunnel_events"("tunnel_id", "created_at");

-- AddForeignKey
ALTER TABLE "tunnel_events" ADD CONSTRAINT "tunnel_events_tunnel_id_fkey" FOREIGN KEY ("tunnel_id") REFERENCES "tunnels"("id") ON DELETE CASCADE ON UPDATE CASCADE;
