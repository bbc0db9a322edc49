-- Run once by the postgres image on an empty volume (docker-compose.yml, profile
-- `postgres`): the runtime database comes from POSTGRES_DB, the webhook one from here.
CREATE DATABASE orket_webhook OWNER orket;
