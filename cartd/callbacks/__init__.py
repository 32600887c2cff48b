"""The callback port: how an event reaches the URL an order named. The domain decides
what to send and when (`cartd.service.callbacks`); an adapter signs and sends it."""

from __future__ import annotations

from cartd.callbacks.base import Answer, Sender, signature

__all__ = ["Answer", "Sender", "signature"]
