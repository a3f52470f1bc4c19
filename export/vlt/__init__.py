"""The VLT network, one module per paper component."""

from .config import PRESETS, VLTConfig, get_config
from .vlt import VLT, build_vlt, count_parameters, vlt_registry

__all__ = ["VLT", "VLTConfig", "PRESETS", "get_config", "build_vlt", "count_parameters", "vlt_registry"]
