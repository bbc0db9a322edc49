"""gunicorn configuration of the API process:
`gunicorn -c python:app.serving.gunicorn_api`.

One gthread worker: the job runner and the WebSocket hub live in it. Threads and
worker connections sit above the WebSocket cap so sockets never starve the JSON API.
"""

from app.serving.gunicorn_common import install_worker_hooks
from app.serving.startup import bind_address, load_settings_or_exit, precheck_or_exit

_settings = load_settings_or_exit()
precheck_or_exit(_settings, "api")

wsgi_app = "wsgi:app"
bind = [bind_address(_settings.host, _settings.port)]
workers = 1
worker_class = "gthread"
threads = _settings.api_threads
worker_connections = threads + 100
timeout = 30
graceful_timeout = 25
max_requests = 0
preload_app = False
reload = False
errorlog = "-"
loglevel = _settings.log_level
control_socket = str(_settings.run_dir / "gunicorn-api.ctl")
proc_name = "orket-api"

install_worker_hooks(globals())
