"""API bearer tokens with scopes, and secret references in the server configuration.

Tokens are kept as SHA-256 digests; a presented token is hashed and compared with
:func:`hmac.compare_digest` against every known digest, without an early exit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.alerts import AuthError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runbook_server.config import TokenSpec
    from runner.authority import Principal as EnginePrincipal
    from runner.secrets import SecretResolver

__all__ = ["ANONYMOUS", "Principal", "TokenBook", "resolve_secret_fields"]


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's name and scopes (``admin`` implies every scope)."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True if this principal holds ``scope``. An ``agent`` token may read, run and (where the agent policy's
        ``agents_may_approve`` says so, checked by the handler) approve."""
        return "admin" in self.scopes or scope in self.scopes or (self.is_agent and scope in ("read", "run", "approve"))

    @property
    def is_agent(self) -> bool:
        """True for an ``agent``-scoped token: its runs are agent runs and the agent policy applies."""
        return "agent" in self.scopes and "admin" not in self.scopes

    def acting(self) -> EnginePrincipal:
        """This token as the engine's principal (:mod:`runner.authority` decides every action with it)."""
        from runner.authority import Principal as Acting

        scopes = None if "admin" in self.scopes else frozenset(self.scopes)
        return Acting("agent" if self.is_agent else "token", self.name, scopes)


ANONYMOUS = Principal("anonymous", frozenset({"admin"}))
"""The principal of every request when no token is configured (loopback binds only)."""


class TokenBook:
    """The configured tokens."""

    def __init__(self, entries: Iterable[tuple[str, bytes, frozenset[str]]]) -> None:
        self._entries = list(entries)

    @classmethod
    def from_specs(cls, specs: Iterable[TokenSpec], resolver: SecretResolver) -> TokenBook:
        """Resolve each ``token`` reference (or take its ``sha256``) into a digest."""
        entries = []
        for spec in specs:
            if spec.token is not None:
                value = resolver.resolve(spec.token, name=f"token '{spec.name}'")
                digest = hashlib.sha256(value.encode()).digest()
            else:
                digest = bytes.fromhex(spec.sha256 or "")
            entries.append((spec.name, digest, frozenset(spec.scopes)))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        """True if any token is configured (requests must then present one)."""
        return bool(self._entries)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer`` header; 401 if missing or unknown."""
        if not self._entries:
            return ANONYMOUS
        if not authorization:
            raise AuthError("missing Authorization header", hint="send `Authorization: Bearer <token>`")
        scheme, _, value = authorization.partition(" ")
        presented = hashlib.sha256(value.strip().encode()).digest()
        found: Principal | None = None
        for name, digest, scopes in self._entries:
            if hmac.compare_digest(presented, digest) and scheme.lower() == "bearer":
                found = Principal(name, scopes)
        if found is None:
            raise AuthError("the bearer token is not valid")
        return found

    @staticmethod
    def authorize(principal: Principal, scope: str) -> None:
        """Raise 403 unless ``principal`` holds ``scope``."""
        if not principal.allows(scope):
            raise AuthError(f"token '{principal.name}' lacks the '{scope}' scope", status=403)


def resolve_secret_fields(model: BaseModel, fields: Iterable[str], resolver: SecretResolver, *, where: str) -> BaseModel:
    """A copy of ``model`` whose (dotted) ``fields`` hold the values behind their secret references."""
    data = model.model_dump()
    for dotted in fields:
        parts = dotted.split(".")
        holder: Any = data
        for part in parts[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or holder.get(parts[-1]) is None:
            continue
        value = holder[parts[-1]]
        name = f"{where}.{dotted}"
        holder[parts[-1]] = (
            [resolver.resolve(v, name=name) for v in value] if isinstance(value, list) else resolver.resolve(value, name=name)
        )
    return type(model).model_validate(data)
