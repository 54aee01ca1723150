"""Fixtures that start real servers (redis-server, the broker) on free ports."""
