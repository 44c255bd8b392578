-- CreateEnum
CREATE TYPE "tunnel_status" AS ENUM ('creating', 'active', 'ending', 'ended');

-- CreateEnum
CREATE TYPE "tunnel_end_reason" AS ENUM ('deleted', 'heartbeat_lapsed', 'create_failed');

-- CreateTable
CREATE TABLE "tunnels" (
    "id" UUID NOT NULL,
    "owner_id" TEXT NOT NULL,
    "slug" TEXT NOT NULL,
    "hostname" TEXT NOT NULL,
    "port" INTEGER NOT NULL,
    "status" "tunnel_status" NOT NULL DEFAULT 'creating',
    "cf_tunnel_id" UUID,
    "dns_record_id" TEXT,
    "end_reason" "tunnel_end_reason",
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "ended_at" TIMESTAMPTZ(3),

    CONSTRAINT "tunnels_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "tunnels_owner_id_status_idx" ON "tunnels"("owner_id", "status");

-- CreateIndex
CREATE INDEX "tunnels_status_updated_at_idx" ON "tunnels"("status", "updated_at");

-- CreateIndex
-- Hand-written: slug uniqueness among tunnels that are not ended. Prisma's schema
-- language (without the partialIndexes preview feature) cannot express the WHERE
-- clause, so schema.prisma only mentions this index in a comment.
CREATE UNIQUE INDEX "tunnels_live_slug_key" ON "tunnels"("slug") WHERE "status" <> 'ended';
