// The OpenID provider, through openid-client: discovery (cached, retried after a failure), the
// authorization URL with PKCE (S256), state and nonce, and the code exchange with ID token
// validation (signature, issuer, audience, expiry, nonce).
import * as client from "openid-client";
import type { OidcConfig } from "../config.js";
import { isLoopback } from "../config.js";

export interface LoginRequest {
  url: string;
  state: string;
  nonce: string;
  codeVerifier: string;
}

export interface VerifiedIdentity {
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
}

/** The provider refused or could not be reached; `unavailable` tells which. */
export class OidcError extends Error {
  constructor(
    message: string,
    readonly unavailable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "OidcError";
  }
}

const PROVIDER_TIMEOUT_SECONDS = 10;

export class OidcProvider {
  private discovered: Promise<client.Configuration> | undefined;

  constructor(private readonly config: OidcConfig) {}

  private configuration(): Promise<client.Configuration> {
    this.discovered ??= this.discover().catch((error: unknown) => {
      this.discovered = undefined; // try again on the next login
      throw new OidcError(`cannot reach the OpenID provider at ${this.config.issuer}: ${describe(error)}`, true, { cause: error });
    });
    return this.discovered;
  }

  private async discover(): Promise<client.Configuration> {
    const issuer = new URL(this.config.issuer);
    const plainHttp = issuer.protocol === "http:" && isLoopback(issuer.hostname.replace(/^\[|\]$/g, ""));
    const auth = this.config.clientSecret === undefined ? client.None() : client.ClientSecretPost(this.config.clientSecret);
    const configuration = await client.discovery(issuer, this.config.clientId, undefined, auth, {
      timeout: PROVIDER_TIMEOUT_SECONDS,
      ...(plainHttp ? { execute: [client.allowInsecureRequests] } : {}),
    });
    configuration.timeout = PROVIDER_TIMEOUT_SECONDS;
    return configuration;
  }

  async startLogin(redirectUri: string): Promise<LoginRequest> {
    const configuration = await this.configuration();
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(configuration, {
      redirect_uri: redirectUri,
      scope: this.config.scopes,
      response_type: "code",
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    return { url: url.href, state, nonce, codeVerifier };
  }

  /** Exchanges the code and validates the ID token; OidcError when either fails. */
  async finishLogin(input: {
    code: string;
    state: string;
    redirectUri: string;
    codeVerifier: string;
    nonce: string;
  }): Promise<VerifiedIdentity> {
    const configuration = await this.configuration();
    // openid-client sends this URL without its query as redirect_uri, which is why configured
    // redirect URIs may not have a query.
    const callback = new URL(input.redirectUri);
    callback.searchParams.set("code", input.code);
    callback.searchParams.set("state", input.state);
    let claims: client.IDToken | undefined;
    try {
      const tokens = await client.authorizationCodeGrant(
        configuration,
        callback,
        { pkceCodeVerifier: input.codeVerifier, expectedState: input.state, expectedNonce: input.nonce, idTokenExpected: true },
      );
      claims = tokens.claims();
    } catch (error) {
      const unavailable = error instanceof TypeError || (error instanceof Error && error.name === "TimeoutError");
      const what = unavailable ? "could not reach the OpenID provider to finish the login" : "the OpenID provider refused the login";
      throw new OidcError(`${what}: ${describe(error)}`, unavailable, { cause: error });
    }
    if (claims === undefined) throw new OidcError("the OpenID provider returned no ID token", false);
    return {
      issuer: claims.iss,
      subject: claims.sub,
      email: typeof claims.email === "string" ? claims.email : null,
      name: typeof claims.name === "string" ? claims.name : null,
    };
  }
}

/** The error's message with any OAuth error code, never a token or code. */
function describe(error: unknown): string {
  if (error instanceof client.ResponseBodyError) return `${error.error}${error.error_description ? `: ${error.error_description}` : ""}`;
  if (error instanceof Error) return error.message;
  return String(error);
}
