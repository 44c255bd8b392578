import type { TunnelAccess } from '../cloudflare/access-gates.js';
import { type AccessConfig, hasTeamRule, isEmailAddress } from '../config/env.js';
import { AppError } from '../errors/catalogue.js';
import type { Tunnel } from '../generated/prisma/client.js';

export const MAX_ACCESS_EMAILS = 20;

/** What a client may send as `access` (the route schema has already checked its shape). */
export interface AccessRequest {
  mode: 'team' | 'public' | 'emails';
  emails?: string[] | undefined;
}

/**
 * The audience a create or PATCH asks for, checked against the operator's rules: absent is
 * the operator's default; `team` needs a team rule; `public` may be forbidden (403
 * ACCESS_PUBLIC_FORBIDDEN); `emails` takes 1-20 valid addresses, and the owner's own
 * address (the token's `email` claim) is added when known.
 */
export function resolveAccess(requested: AccessRequest | undefined, config: AccessConfig, ownerEmail?: string | undefined): TunnelAccess {
  const mode = requested?.mode ?? config.defaultMode;
  if (mode !== 'emails' && requested?.emails !== undefined) {
    throw new AppError('INVALID_INPUT', { message: 'access.emails goes with access.mode "emails" only.', details: { field: 'access.emails' } });
  }
  if (mode === 'team') {
    if (!hasTeamRule(config)) {
      throw new AppError('INVALID_INPUT', { message: 'This broker has no team rule (ACCESS_TEAM_EMAIL_DOMAINS or ACCESS_TEAM_EMAILS); choose public or emails.', details: { field: 'access.mode' } });
    }
    return { mode: 'team' };
  }
  if (mode === 'public') {
    if (!config.allowPublic) throw new AppError('ACCESS_PUBLIC_FORBIDDEN');
    return { mode: 'public' };
  }
  const given = requested?.emails ?? [];
  if (given.length < 1 || given.length > MAX_ACCESS_EMAILS) {
    throw new AppError('INVALID_INPUT', { message: `access.emails takes 1-${MAX_ACCESS_EMAILS} email addresses.`, details: { field: 'access.emails' } });
  }
  const emails = given.map((e) => e.trim().toLowerCase());
  const bad = emails.find((e) => !isEmailAddress(e));
  if (bad !== undefined) throw new AppError('INVALID_INPUT', { message: 'access.emails must hold valid email addresses.', details: { field: 'access.emails' } });
  const owner = ownerEmail?.trim().toLowerCase();
  if (owner && isEmailAddress(owner)) emails.push(owner);
  return { mode: 'emails', emails: [...new Set(emails)].sort() };
}

/** The audience as the API shows it. */
export function accessView(tunnel: Pick<Tunnel, 'accessMode' | 'accessEmails'>): { mode: 'team' | 'public' | 'emails'; emails?: string[] } {
  return tunnel.accessMode === 'emails' ? { mode: 'emails', emails: [...tunnel.accessEmails] } : { mode: tunnel.accessMode };
}

/** For the database and the audit trail. */
export function accessColumns(access: TunnelAccess): { mode: TunnelAccess['mode']; emails: string[] } {
  return { mode: access.mode, emails: access.mode === 'emails' ? access.emails : [] };
}
