# PostgreSQL 18 with this package installed, so the server's archive_command / restore_command
# can call `dr wal push` / `dr wal fetch` (the archiver runs on database hosts, without Airflow).
FROM postgres:18
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/dr-venv
COPY pyproject.toml /opt/dr/pyproject.toml
COPY include /opt/dr/include
# The archiver extra only: boto3 and PyYAML (no Airflow, redis, pydantic or psycopg).
RUN /opt/dr-venv/bin/pip install --no-cache-dir "/opt/dr[archiver]" \
    && ln -s /opt/dr-venv/bin/dr /usr/local/bin/dr
