"""The controller's side of the stream: the sink thread, the run's state, the report.

Nothing here knows about pytest.
"""
