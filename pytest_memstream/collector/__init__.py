"""The controller's side of the stream: the sink thread, the run's state, the report.

Nothing here knows about pytest.
"""

#: What a report's tests can be sorted by (here, so that pytest's option parsing can name
#: them without importing the report module in every process).
SORT_KEYS = ("growth", "peak", "kept")
