"""The Orket engine: assets, cards, state machine, orchestration; no Flask here."""
