import { describe, expect, it } from 'vitest';
import { ConfigError, loadBootConfig } from '../../src/config/env.js';

function problems(env: Record<string, string>): string[] {
  try {
    loadBootConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('the ACCESS_ variables', () => {
  it('default to no team rule and public tunnels: the broker before Access', () => {
    expect(loadBootConfig({}).access).toEqual({ teamEmailDomains: [], teamEmails: [], defaultMode: 'public', allowPublic: true, sessionDuration: '24h' });
  });

  it('make team the default once a team rule is set, lower-cased and deduplicated', () => {
    const config = loadBootConfig({ ACCESS_TEAM_EMAIL_DOMAINS: 'Team.Example, @other.example,team.example', ACCESS_TEAM_EMAILS: 'Ada@Else.Example', ACCESS_SESSION_DURATION: '30m', ACCESS_ALLOW_PUBLIC: 'false' });
    expect(config.access).toEqual({ teamEmailDomains: ['team.example', 'other.example'], teamEmails: ['ada@else.example'], defaultMode: 'team', allowPublic: false, sessionDuration: '30m' });
    expect(loadBootConfig({ ACCESS_TEAM_EMAILS: 'a@b.example', ACCESS_DEFAULT_MODE: 'public' }).access.defaultMode).toBe('public');
  });

  it('refuse what cannot work, naming the variable', () => {
    expect(problems({ ACCESS_DEFAULT_MODE: 'team' })).toEqual([expect.stringMatching(/^ACCESS_DEFAULT_MODE: team needs a team rule/)]);
    expect(problems({ ACCESS_ALLOW_PUBLIC: 'false' })).toEqual([expect.stringMatching(/^ACCESS_DEFAULT_MODE: public while ACCESS_ALLOW_PUBLIC=false/)]);
    expect(problems({ ACCESS_TEAM_EMAIL_DOMAINS: 'not a domain' })).toEqual([expect.stringMatching(/^ACCESS_TEAM_EMAIL_DOMAINS: "not a domain" is not a domain/)]);
    expect(problems({ ACCESS_TEAM_EMAILS: 'nobody' })).toEqual([expect.stringMatching(/^ACCESS_TEAM_EMAILS: "nobody" is not an email address/)]);
    expect(problems({ ACCESS_SESSION_DURATION: 'a day' })[0]).toMatch(/^ACCESS_SESSION_DURATION/);
    expect(problems({ ACCESS_DEFAULT_MODE: 'emails' })[0]).toMatch(/^ACCESS_DEFAULT_MODE/);
  });
});
