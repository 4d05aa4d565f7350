# fakemx: the lab (every catalog profile on its own port) by default.
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /home/fakemx fakemx \
    && install -d -o fakemx -g fakemx -m 0700 /var/lib/fakemx \
    && install -d -o fakemx -g fakemx -m 0755 /var/lib/fakemx-relay
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fakemx ./fakemx
COPY profiles ./profiles
RUN pip install --no-cache-dir . && rm -rf /src

USER fakemx
WORKDIR /home/fakemx
VOLUME ["/var/lib/fakemx"]
EXPOSE 2600-2699
# The healthy sink is on the base port: healthy when it greets.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=5 \
    CMD ["python", "-c", "import socket; s = socket.create_connection(('127.0.0.1', 2600), 2); assert s.recv(3) == b'220'"]
CMD ["fakemx", "lab", "--host", "0.0.0.0", "--base-port", "2600", "--state-dir", "/var/lib/fakemx"]
