import type { Prisma, TunnelEvent, TunnelEventType } from '../generated/prisma/client.js';

/**
 * The audit trail (`tunnel_events`): who did what to a tunnel, when, and why.
 *
 * Actors are `user:<id>`, `operator:<name>`, `reaper`, `reconciler` or `system`. A user's id
 * is always prefixed: user ids are free-form, and one called "reaper" must not read as the reaper.
 */
export type Actor = `user:${string}` | `operator:${string}` | 'reaper' | 'reconciler' | 'system';

export const userActor = (userId: string): Actor => `user:${userId}`;
export const operatorActor = (name: string): Actor => `operator:${name}`;

export type { TunnelEventType };

export interface TunnelEventInput {
  type: TunnelEventType;
  actor: Actor;
  /** Why: reasons and failure descriptions. Never a token, a secret or text from outside. */
  details?: Prisma.InputJsonObject;
}

/** The most events shown for one tunnel: the latest ones. Repeated end failures are not re-recorded, so few tunnels get near it. */
export const MAX_EVENTS_PER_TUNNEL = 100;

/** An event as the API and the CLI show it. */
export interface TunnelEventView {
  type: TunnelEventType;
  actor: string;
  at: string;
  details: Record<string, unknown>;
}

export function toEventView(event: Pick<TunnelEvent, 'type' | 'actor' | 'createdAt' | 'details'>): TunnelEventView {
  const details = event.details;
  return {
    type: event.type,
    actor: event.actor,
    at: event.createdAt.toISOString(),
    details: details !== null && typeof details === 'object' && !Array.isArray(details) ? (details as Record<string, unknown>) : {},
  };
}
