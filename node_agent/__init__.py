"""The Provider's node agent. Imports ``protocol`` only: never the coordinator or a database.

Built so far: the hardware inventory a node announces in its hello. The session loop and the
inference backends arrive with the coordinator (see the issues).
"""

from node_agent.hardware import detect_gpus, detect_hardware, parse_nvidia_smi

__all__ = ["detect_gpus", "detect_hardware", "parse_nvidia_smi"]
