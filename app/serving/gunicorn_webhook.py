"""gunicorn configuration of the webhook process:
`gunicorn -c python:app.serving.gunicorn_webhook`.
"""

from app.serving.gunicorn_common import install_worker_hooks
from app.serving.startup import bind_address, load_settings_or_exit, precheck_or_exit

_settings = load_settings_or_exit()
precheck_or_exit(_settings, "webhook")

wsgi_app = "webhook_wsgi:app"
bind = [bind_address(_settings.webhook_host, _settings.webhook_port)]
workers = 1
worker_class = "gthread"
threads = 8
worker_connections = threads + 100
timeout = 30
graceful_timeout = 25
max_requests = 0
preload_app = False
reload = False
errorlog = "-"
loglevel = _settings.log_level
control_socket = str(_settings.run_dir / "gunicorn-webhook.ctl")
proc_name = "orket-webhook"

install_worker_hooks(globals())
