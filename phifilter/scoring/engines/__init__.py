"""Engines spread shards over workers; each runs the same flow and returns a ScoreSummary.

``local`` (this process, threaded stages), ``processes`` (one worker process per device,
``--devices``), ``ray`` (actors on a Ray cluster, ``--engine ray``). They are imported only
when chosen.
"""
