"""Adapters that record federated runs of other frameworks (optional extras).

:mod:`fedaudit.integrations.flower` (``pip install 'fedaudit[flower]'``) holds a
Flower strategy wrapper that records what the server receives, and a client
mod that records on the client side. Nothing in fedaudit imports this package
but the command line and the audit steps; it imports only the recorder.
"""

__all__: list[str] = []
