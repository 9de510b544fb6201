"""A simulator of the Semookii Cloud Control API, for tests, demos and benchmarks with no account."""

from .app import CallRecord, Fault, RunningSimulator, SimConfig, Simulator, serve

__all__ = ["CallRecord", "Fault", "RunningSimulator", "SimConfig", "Simulator", "serve"]
