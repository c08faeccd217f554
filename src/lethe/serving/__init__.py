"""The guard as a service: OpenAI-compatible proxy, admin API, metrics (``lethe serve``)."""

from lethe.serving.app import create_app, wait_ready
from lethe.serving.settings import ServeSettings

__all__ = ["create_app", "wait_ready", "ServeSettings"]
