"""The Airflow side of the package: the only modules that import Airflow.

``connections`` turns Airflow Connections into the library's endpoints; ``alerting`` posts the
library's alerts through the slack provider, builds task callbacks and turns errors into task
outcomes; one module per DAG family builds its DAGs (``backup_dags``: logical tiers and cleanup,
``physical_dags``: WAL archive and incremental chain, ``failover_dags``: health, failover,
failback, ``drill_dags``: drills). DAG files in ``dags/`` stay thin and call these.
"""
