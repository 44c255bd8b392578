/** Query parameters that carry credentials in connection strings (`?password=`, `?sslpassword=`, `?auth_token=`…). */
const SECRET_PARAM = /pass|secret|token|key|auth|cred/i;

/**
 * Connection strings carry passwords; log lines and error messages must not. Masks the
 * password and secret-looking query parameters. A URL with no host (`redis:/:pw@h`) or that
 * does not parse could hold a password anywhere, so nothing of it is shown.
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return '<unparseable url>';
  }
  if (parsed.host === '') return `${parsed.protocol}<redacted: no host>`;
  if (parsed.password) parsed.password = '***';
  for (const name of new Set(parsed.searchParams.keys())) {
    if (SECRET_PARAM.test(name)) parsed.searchParams.set(name, '***');
  }
  return parsed.toString();
}
