/** The bearer token is not one the broker accepts: answered with 401. */
export class InvalidTokenError extends Error {
  /** The message says nothing an attacker could use and helps whoever set up the token: show it. */
  readonly public: boolean;

  constructor(message = 'The bearer token is not valid.', options?: { cause?: unknown; public?: boolean }) {
    super(message, options);
    this.name = 'InvalidTokenError';
    this.public = options?.public ?? false;
  }
}

/**
 * The token may well be valid but its key could not be fetched (the identity provider's JWKS
 * is unreachable): answered with 503, so clients retry rather than drop their credentials.
 */
export class IdentityProviderUnavailableError extends Error {
  constructor(message = "The identity provider's keys could not be fetched.", options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityProviderUnavailableError';
  }
}
