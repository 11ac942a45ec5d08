# The balancer. Two ways to build, one file:
#   docker build -t swarmscale/lb:dev .                        public python:3.11-slim + the package index
#   docker build --build-arg BASE_IMAGE=swarmscale/base:bookworm -t swarmscale/lb:dev .
#                                                              no registry: scripts/swarm.sh image does this,
#                                                              with a wheelhouse in build/wheels (scripts/wheels.sh)
# When build/wheels holds wheels, dependencies come from there alone (--no-index).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
# pyproject.toml is the one list of dependencies; the glob lets build/wheels be absent.
COPY pyproject.toml build/wheel[s] /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/wheels/pyproject.toml', 'rb'))['project']['dependencies']))" >/tmp/requirements.txt \
 && if ls /tmp/wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /tmp/wheels; fi \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -q "$@" -r /tmp/requirements.txt

FROM ${BASE_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY deploy/healthcheck.py /app/healthcheck.py
COPY policies /app/policies
COPY lb /app/lb
# Root: the balancer talks to the engine through the bind-mounted /var/run/docker.sock.
EXPOSE 8080 8081
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-I", "-S", "/app/healthcheck.py", "8081", "/healthz"]
CMD ["python3", "-m", "lb"]
