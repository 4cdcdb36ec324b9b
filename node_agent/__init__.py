"""The Provider's node agent. Imports ``protocol`` only: never the coordinator or a database.

- :class:`NodeAgent` keeps the node connected to its coordinator and serves jobs (the session
  loop: handshake, heartbeats, jobs, cancel, drain, reconnect with backoff);
- :class:`NodeConfig` and :func:`load_config` read ``node.toml``;
- :mod:`node_agent.enrollment` talks to the coordinator's HTTP API for ``shareai node init``;
- :func:`detect_hardware` is the inventory announced in the hello;
- :mod:`node_agent.backends` holds the inference backends (mock, openai, vllm).

Errors: :class:`NodeAgentError` and its subclasses (see :mod:`node_agent.errors`).
"""

from node_agent.agent import NodeAgent, agent_version
from node_agent.config import (
    AgentOptions,
    ModelConfig,
    NodeConfig,
    build_config,
    hub_url_for,
    load_config,
    parse_usd_per_1m,
    render_node_toml,
)
from node_agent.errors import AgentStopped, ConfigError, EnrollmentError, NodeAgentError
from node_agent.gpus import Nvml
from node_agent.hardware import detect_hardware

__all__ = [
    "AgentOptions",
    "AgentStopped",
    "ConfigError",
    "EnrollmentError",
    "ModelConfig",
    "NodeAgent",
    "NodeAgentError",
    "NodeConfig",
    "Nvml",
    "agent_version",
    "build_config",
    "detect_hardware",
    "hub_url_for",
    "load_config",
    "parse_usd_per_1m",
    "render_node_toml",
]
