"""A demo suite with the memory habits of a real one: big loads, caches that keep, spikes."""
