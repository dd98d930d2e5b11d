"""Bearer tokens for the FHIR client: a static token, or SMART Backend Services.

SMART Backend Services (client-credentials grant with a signed JWT assertion): the client signs
`{iss: client_id, sub: client_id, aud: token_url, exp: now + <= 5 min, jti}` with its private key
(RS384, `kid` in the header), POSTs it to the token endpoint and caches the access token until shortly
before `expires_in` runs out.  The FHIR client calls `invalidate()` when the server answers 401, and
retries once with a fresh token.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Protocol, runtime_checkable

import httpx
import jwt

from careflow.config import ConfigError, Settings
from careflow.fhir.errors import FhirError

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class FhirAuthError(FhirError):
    """The token endpoint refused us or answered nonsense (the message carries no secret)."""


class TokenUnavailable(Exception):
    """The token endpoint answered 429 or 5xx: worth retrying (the FHIR client does, with backoff)."""


@runtime_checkable
class TokenProvider(Protocol):
    async def token(self) -> str:
        """A bearer token valid now."""
        ...

    def invalidate(self) -> None:
        """Forget the cached token (the server said 401)."""
        ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        pass  # nothing to refresh: a second 401 is reported to the caller


class SmartBackendServices:
    """SMART Backend Services token provider (pyjwt, RS384 by default)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key: str | bytes,
        scope: str = "system/*.read",
        key_id: str | None = None,
        algorithm: str = "RS384",
        assertion_lifetime: float = 300.0,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self._key = private_key
        self._kid = key_id
        self._alg = algorithm
        self._lifetime = min(assertion_lifetime, 300.0)  # SMART: exp no more than five minutes ahead
        self._margin = refresh_margin
        self._timeout = timeout
        self._http = http
        self._cached: tuple[str, float] | None = None  # (token, monotonic expiry)
        self._lock = asyncio.Lock()

    def assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + int(self._lifetime),
            "jti": str(uuid.uuid4()),
        }
        headers = {"typ": "JWT", **({"kid": self._kid} if self._kid else {})}
        return jwt.encode(claims, self._key, algorithm=self._alg, headers=headers)

    async def token(self) -> str:
        cached = self._cached
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        async with self._lock:  # one token request at a time, the rest reuse its result
            cached = self._cached
            if cached and time.monotonic() < cached[1]:
                return cached[0]
            token, expires_in = await self._request()
            self._cached = (token, time.monotonic() + max(0.0, expires_in - self._margin))
            return token

    def invalidate(self) -> None:
        self._cached = None

    async def _request(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        if self._http is not None:
            resp = await self._http.post(self.token_url, data=form, timeout=self._timeout)
        else:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                resp = await http.post(self.token_url, data=form)
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TokenUnavailable(f"token endpoint answered {resp.status_code}")
        if resp.status_code != 200:
            # OAuth error codes (invalid_client, ...) are safe to report; descriptions may not be.
            try:
                code = str(resp.json().get("error", "unknown"))
            except ValueError:
                code = "unknown"
            raise FhirAuthError(f"token endpoint answered {resp.status_code} ({code})")
        try:
            body = resp.json()
            return str(body["access_token"]), float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise FhirAuthError("token endpoint answered without an access_token") from None


def token_provider(settings: Settings) -> TokenProvider | None:
    """The EHR credentials configured in settings: SMART Backend Services, a static token, or none."""
    if settings.fhir_smart_client_id and settings.fhir_smart_token_url and settings.fhir_smart_key_path:
        try:
            key = settings.fhir_smart_key_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                "CAREFLOW_FHIR_SMART_KEY_PATH", f"cannot read the key: {exc.strerror}"
            ) from None
        return SmartBackendServices(
            token_url=settings.fhir_smart_token_url,
            client_id=settings.fhir_smart_client_id,
            private_key=key,
            scope=settings.fhir_smart_scope,
            key_id=settings.fhir_smart_key_id,
        )
    if settings.fhir_token is not None:
        return StaticToken(settings.fhir_token.get_secret_value())
    return None
