"""The Airflow side of the package: the only modules that import Airflow.

``connections`` turns Airflow Connections into the library's endpoints; ``alerting`` posts the
library's alerts through the slack provider and builds task callbacks; ``dag_factories`` builds
the DAGs that differ only by tier. DAG files in ``dags/`` stay thin and call these.
"""
