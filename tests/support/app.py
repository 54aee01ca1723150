"""Fixtures for the broker application in-process (aiohttp test client)."""
