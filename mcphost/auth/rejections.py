"""Why a credential that reached a verifier was not turned into an identity.

The token verifier (:mod:`mcphost.auth.oauth`) raises these and the authenticator
(:mod:`mcphost.auth.authenticator`) turns them into a 401, 403 or 503; here, so that neither
needs the other to speak of them.
"""


class Rejected(Exception):
    """The credential is not acceptable; ``str(self)`` says why, safe to tell the client."""


class InsufficientScope(Rejected):
    """The credential is valid but grants no tool."""


class KeysUnavailable(Exception):
    """The identity provider's signing keys could not be fetched, so no token can be checked now."""
