# Airflow 3.3 with the four providers and this package installed.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml /opt/dr/
COPY --chown=airflow:root include /opt/dr/include
RUN pip install --no-cache-dir -r /opt/dr/requirements.txt -c /opt/dr/constraints.txt \
    && pip install --no-cache-dir --no-deps /opt/dr
