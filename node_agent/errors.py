"""Errors of the node agent. Each carries a one-line message fit for the Provider's terminal.

Hierarchy::

    NodeAgentError          (root)
    ├── ConfigError         a bad node.toml or command-line value; the message names the key
    ├── EnrollmentError     the coordinator's HTTP API refused or answered nonsense
    └── AgentStopped        the coordinator refused this node for good (revoked, suspended,
                            unknown after enrollment retries, or a key other than the pinned one)

Inference failures are :class:`node_agent.backends.base.BackendError` (they become ``failed``
messages, never exits). Wire violations are :class:`protocol.ProtocolError` (the agent closes and
reconnects).
"""

from __future__ import annotations

__all__ = ["AgentStopped", "ConfigError", "EnrollmentError", "NodeAgentError"]


class NodeAgentError(Exception):
    """Root of the node agent's own errors."""


class ConfigError(NodeAgentError):
    """A configuration value is missing or wrong. ``str(error)`` is one line naming the key."""


class EnrollmentError(NodeAgentError):
    """Fetching the coordinator's key, the account or enrolling the node key failed."""


class AgentStopped(NodeAgentError):
    """The agent gave up: reconnecting cannot help until the Provider acts.

    ``code`` is the coordinator's reject code (``revoked``, ``suspended``, ``unknown_node``) or
    ``untrusted_coordinator`` when the coordinator presented a key other than the pinned one.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
