"""Routing policy: pure functions over an immutable snapshot of the network.

No I/O and no imports from ``coordinator`` or ``node_agent``. The policy arrives with its issue;
until then this package exports nothing.
"""

__all__: list[str] = []
