"""The coordinator: customer API, node hub, accounts and keys, settlement and status pages.

It imports ``protocol`` and ``scheduler``; wire schemas are never ORM tables. The service itself
is the next issue's work; until then this package exports nothing.
"""

__all__: list[str] = []
