"""Per-message-size choice of algorithm (placeholder rule until measured: native)."""
from .native import NativeCollectives


class AutoCollectives(NativeCollectives):
    topology = "auto"
