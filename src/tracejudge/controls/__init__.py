"""The production controls: what is judged, how often, at what cost, and what is picked up.

One room per control, each used by the evaluation (``tasks``), the producer
(``enqueue``) and the beat tasks (``worker.scheduled``):

- ``sampling``: sampling and filters (a hash of the trace id; no state);
- ``budget``: the shared daily spend (Lua reserve/settle in Redis);
- ``result_cache``: judge results reused across traces;
- ``counters``: daily counts per workflow (sampled, skipped, cache hits);
- ``judged``: the plan fingerprint and whether a trace counts as judged;
- ``online``: automatic pick-up (the scan, watermarks, seen keys);
- ``deferred``: evaluations put off until the budget renews, and their release.
"""
