"""Locust load scenarios (OPS-5) and `python -m locustfiles.harness`, which runs them.

`webhook.py` holds the webhook users, `runtime.py` the API and WebSocket-connect users,
`ws.py` the WebSocket fan-out users, and `common.py` what they share: targets,
credentials, request quotas and exact timings.
"""
