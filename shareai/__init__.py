"""The ``shareai`` command line: it composes the coordinator and the node agent, and belongs to
neither, so a Provider's install never needs coordinator code paths to run its node.
"""

__all__: list[str] = []
