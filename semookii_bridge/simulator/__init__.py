"""A simulator of the Semookii Cloud Control API, for tests, demos and benchmarks with no account."""

from .app import CallRecord, RunningSimulator, SimConfig, Simulator, serve
from .faults import Fault

__all__ = ["CallRecord", "Fault", "RunningSimulator", "SimConfig", "Simulator", "serve"]
