import type { CheckResult } from './access-check.js';

export const DOMAIN_PLACEMENT_CHECKS = ['tunnel domain', 'tunnel certificates'] as const;

/**
 * Where TUNNEL_DOMAIN sits in its Cloudflare zone, for `doctor`: two risks that only the
 * zone's name reveals, each a warning since the broker works either way.
 *
 * - Cookies. Below the apex, the zone most likely also serves the company's own sites
 *   (tunnels.example.com in zone example.com): every tunnel, that is any developer's laptop
 *   app, then receives cookies scoped to example.com and can set cookies for www.example.com
 *   and the rest. Only a heuristic: the zone may serve nothing else.
 * - Certificates. Hostnames are `<slug>.<TUNNEL_DOMAIN>`, so below the apex they are two or
 *   more labels below the zone, and Cloudflare's Universal SSL covers only the apex and one
 *   wildcard level (`*.example.com`): browsers would get no valid certificate.
 */
export function domainPlacementChecks(zoneName: string, tunnelDomain: string): CheckResult[] {
  const zone = zoneName.toLowerCase();
  const domain = tunnelDomain.toLowerCase();
  const [cookies, certificates] = DOMAIN_PLACEMENT_CHECKS;
  if (domain === zone) {
    return [
      { name: cookies, status: 'ok', message: `TUNNEL_DOMAIN ${domain} is its zone's apex: tunnels share cookies with no other site of yours` },
      { name: certificates, status: 'ok', message: `<slug>.${domain} is covered by Cloudflare's Universal SSL (*.${zone})` },
    ];
  }
  const depth = domain.split('.').length - zone.split('.').length + 1;
  return [
    {
      name: cookies,
      status: 'warn',
      message: `TUNNEL_DOMAIN ${domain} is below the apex of zone ${zone}, which likely serves your other sites too: every tunnel would ` +
        `receive cookies scoped to ${zone} and could set cookies for its other hosts`,
      fix: `serve tunnels from a registrable domain of their own (e.g. ${suggestedDomain(zone)}) as its own zone, with TUNNEL_DOMAIN its apex; ` +
        `ignore this if ${zone} serves nothing else`,
    },
    {
      name: certificates,
      status: 'warn',
      message: `tunnel hostnames <slug>.${domain} are ${depth} labels below zone ${zone}, and Cloudflare's Universal SSL covers only ${zone} ` +
        `and *.${zone}: browsers get no valid certificate for them`,
      fix: `order a certificate for *.${domain} (Advanced Certificate Manager) or enable Total TLS on the zone, or make TUNNEL_DOMAIN a zone's apex`,
    },
  ];
}

/** example.com -> example-tunnels.com: the shape of the advice, not a name to register. */
function suggestedDomain(zone: string): string {
  const dot = zone.indexOf('.');
  return dot < 0 ? `${zone}-tunnels` : `${zone.slice(0, dot)}-tunnels${zone.slice(dot)}`;
}
