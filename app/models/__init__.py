"""SQLAlchemy models: one declarative base per database."""

from app.models.runtime import RuntimeBase
from app.models.webhook import WebhookBase

__all__ = ["RuntimeBase", "WebhookBase"]
