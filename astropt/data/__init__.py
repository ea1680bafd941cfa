"""Galaxy image data: the shard format and the tools that make and check shard sets.

- :mod:`astropt.data.schema`: the Parquet shard format, writers, :class:`ShardSet`.
- :mod:`astropt.data.synth`: synthetic multi-band galaxies (``python -m astropt.data.synth``).
- :mod:`astropt.data.convert`: real imagery to shards (``python -m astropt.data.convert``).
- :mod:`astropt.data.check`: find every problem of a shard set (``python -m astropt.data.check``).

Nothing is imported here, so ``import astropt.data`` stays cheap.
"""
