# syntax=docker/dockerfile:1
# The authbench image. By default it serves one configuration of loadtests/configs.toml,
# named by AUTHBENCH_CONFIG (backend + flags, e.g. session-redis, jwt-es256), on :8080, with
# its stores from DATABASE_URL / REDIS_URL / MEMCACHED_URL / SESSION_DIR. With another
# command the same image runs the bench runner or a Locust worker (see docker-compose.yml).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned dependencies of pyproject.toml, in a layer of their own: editing the code
# does not reinstall them. Every one is pinned with == there (tests/containers checks it).
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY servers ./servers
COPY loadtests ./loadtests
# Editable: one copy of the code, /app, importable from any directory with its data files
# (loadtests/configs.toml), and the locustfile at the path workers are given.
RUN pip install --no-deps --editable . \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/authbench authbench \
    && mkdir -p /app/results /var/lib/authbench/sessions \
    && chown authbench:authbench /app/results /var/lib/authbench/sessions

USER 10001:10001
# A configuration that needs no store, so that `docker run authbench` answers on its own.
ENV AUTHBENCH_CONFIG=jwt-hs256-stateless \
    SESSION_DIR=/var/lib/authbench/sessions
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=15s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
# exec-server replaces itself with `python -m servers …`: the server is PID 1 and gets the signals.
CMD ["python", "-m", "loadtests", "exec-server", "--host", "0.0.0.0", "--port", "8080"]
