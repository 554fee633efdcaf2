"""Journal stores: the interface (:mod:`runner.store.base`) and records (:mod:`runner.store.records`)."""

from runner.store.base import Store

__all__ = ["Store"]
