# fakemx: one profile with its HTTP API by default, configured by FAKEMX_*
# variables (docs/run-anywhere.md); FAKEMX_MODE=lab serves every catalog
# profile instead (the compose lab passes `fakemx lab ...` as its command).
#   docker run -e FAKEMX_PROFILE=4.4.7-defer-rcpt -e FAKEMX_API_TOKEN=secret \
#              -p 2525:2525 -p 8025:8025 fakemx
# The base is pinned to one Python release and one Debian release; the image installs
# the wheel built from this same commit in the first stage (as `python -m build` makes
# it for PyPI: tests/test_run_anywhere.py builds and installs it), not the source tree.
# BASE may name another image with python3 and its venv module (Debian's python3-venv):
# the tests build this file on a Debian bookworm image made locally with debootstrap,
# since no image registry is reachable where they run (tests/container_engine.py).
ARG BASE=python:3.11.7-slim-bookworm
FROM ${BASE} AS wheel
# pip's own variables, unset unless given: the tests install from a wheelhouse on
# loopback (--network host --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=URL).
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fakemx ./fakemx
COPY profiles ./profiles
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check build==1.2.2 \
    && /opt/build/bin/python -m build --wheel --outdir /dist

FROM ${BASE}
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
RUN useradd --system --uid 10001 --create-home --home-dir /home/fakemx fakemx \
    && install -d -o fakemx -g fakemx -m 0700 /var/lib/fakemx \
    && install -d -o fakemx -g fakemx -m 0755 /var/lib/fakemx-relay
COPY --from=wheel /dist /dist
COPY deploy/healthcheck.py /opt/fakemx/bin/fakemx-healthcheck
# A venv of its own, on either base: Debian's python3 refuses a system-wide pip install
# (PEP 668). Its bin comes first on PATH (below), so `fakemx` and the health check's
# python3 are the venv's.
RUN python3 -m venv /opt/fakemx \
    && /opt/fakemx/bin/pip install --no-cache-dir --disable-pip-version-check /dist/*.whl \
    && rm -rf /dist && chmod 0755 /opt/fakemx/bin/fakemx-healthcheck

USER fakemx
WORKDIR /home/fakemx
VOLUME ["/var/lib/fakemx"]
# The API on every address needs FAKEMX_API_TOKEN (or FAKEMX_API_TOKEN_FILE, e.g.
# a secret): without one fakemx refuses to start, saying so. FAKEMX_API= (empty)
# turns the API off. Session lines go to stdout (FAKEMX_LOG_FORMAT=json for collectors).
ENV FAKEMX_MODE=serve \
    FAKEMX_HOST=0.0.0.0 \
    FAKEMX_PORT=2525 \
    FAKEMX_BASE_PORT=2600 \
    FAKEMX_STATE_DIR=/var/lib/fakemx \
    FAKEMX_API=0.0.0.0:8025 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/fakemx/bin:$PATH
EXPOSE 2525 2600-2749 8025
# Ready when the API answers (any profile, no SMTP session), else when the SMTP port accepts.
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=15 \
    CMD ["fakemx-healthcheck"]
CMD ["fakemx", "run"]
