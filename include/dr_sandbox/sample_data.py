"""Litper-like sample data: customers, orders, shipments and payments, with foreign keys and
indexes. ``scale`` 1 is about 10 MB; the size grows linearly (scale 80 is about 1 GB)."""

from __future__ import annotations

import logging

from psycopg.types.numeric import Int8

from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.postgres.db import connect

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    city        text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status      text NOT NULL,
    total_cop   numeric(14, 2) NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_customer_idx ON orders (customer_id);
CREATE INDEX IF NOT EXISTS orders_created_idx ON orders (created_at);
CREATE TABLE IF NOT EXISTS shipments (
    id           bigint PRIMARY KEY,
    order_id     bigint NOT NULL REFERENCES orders (id),
    carrier      text NOT NULL,
    tracking     text NOT NULL,
    address      text NOT NULL,
    shipped_at   timestamptz,
    delivered_at timestamptz
);
CREATE INDEX IF NOT EXISTS shipments_order_idx ON shipments (order_id);
CREATE TABLE IF NOT EXISTS payments (
    id        bigint PRIMARY KEY,
    order_id  bigint NOT NULL REFERENCES orders (id),
    method    text NOT NULL,
    amount    numeric(14, 2) NOT NULL,
    paid_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_order_idx ON payments (order_id);
"""

# Rows per unit of scale, inserted one unit at a time so memory and WAL stay bounded.
CUSTOMERS_PER_UNIT = 8_000
ORDERS_PER_UNIT = 24_000

FILL_UNIT = [
    """
INSERT INTO customers
SELECT c, 'Cliente ' || c, 'cliente' || c || '@litper.co',
       (ARRAY['Bogotá','Medellín','Cali','Barranquilla','Cartagena','Bucaramanga'])[1 + c %% 6],
       now() - (c %% 1000) * interval '1 hour'
FROM generate_series(%(c0)s + 1, %(c0)s + %(nc)s) AS c
    """,
    """
INSERT INTO orders
SELECT o, %(c0)s + 1 + o %% %(nc)s, (ARRAY['created','paid','shipped','delivered'])[1 + o %% 4],
       round((10000 + (o * 7919) %% 990000)::numeric, 2), now() - (o %% 5000) * interval '1 minute'
FROM generate_series(%(o0)s + 1, %(o0)s + %(no)s) AS o
    """,
    """
INSERT INTO shipments
SELECT o, o, (ARRAY['Servientrega','Coordinadora','Interrapidisimo','Envia'])[1 + o %% 4],
       'LT' || lpad(o::text, 12, '0'), 'Calle ' || (o %% 200) || ' # ' || (o %% 90) || '-' || (o %% 70)
       || ', barrio ' || md5(o::text), now() - interval '2 days', now() - interval '1 day'
FROM generate_series(%(o0)s + 1, %(o0)s + %(no)s) AS o
    """,
    """
INSERT INTO payments
SELECT o, o, (ARRAY['PSE','Nequi','Daviplata','Tarjeta','Contraentrega'])[1 + o %% 5],
       round((10000 + (o * 7919) %% 990000)::numeric, 2), now() - (o %% 5000) * interval '1 minute'
FROM generate_series(%(o0)s + 1, %(o0)s + %(no)s) AS o
    """,
]


def load_sample_data(endpoint: PostgresEndpoint, scale: float = 1.0) -> dict[str, int]:
    """Create the tables (idempotent) and fill them up to ``scale`` units. Returns row counts."""
    target_customers = max(1, int(CUSTOMERS_PER_UNIT * scale))
    target_orders = max(1, int(ORDERS_PER_UNIT * scale))
    with connect(endpoint) as conn:
        conn.execute(SCHEMA)
        have_customers = conn.execute("SELECT coalesce(max(id), 0) FROM customers").fetchone()[0]  # type: ignore[index]
        have_orders = conn.execute("SELECT coalesce(max(id), 0) FROM orders").fetchone()[0]  # type: ignore[index]
        while have_customers < target_customers or have_orders < target_orders:
            nc = min(CUSTOMERS_PER_UNIT, max(target_customers - have_customers, 0))
            no = min(ORDERS_PER_UNIT, max(target_orders - have_orders, 0))
            if nc == 0:
                # Orders need customers of this batch; add one so the modulo below stays valid.
                nc = 1
            with conn.transaction():
                for statement in FILL_UNIT:
                    # Int8: psycopg sends small Python ints as smallint, and smallint sums
                    # overflow past 32767 rows (any scale above ~4).
                    params = {
                        "c0": Int8(have_customers),
                        "nc": Int8(nc),
                        "o0": Int8(have_orders),
                        "no": Int8(no),
                    }
                    conn.execute(statement, params)
            have_customers += nc
            have_orders += no
            log.info("sample data: %d customers, %d orders", have_customers, have_orders)
        conn.execute("ANALYZE")
        return table_row_counts(conn)


def table_row_counts(conn: object) -> dict[str, int]:
    counts = {}
    for table in ("customers", "orders", "shipments", "payments"):
        counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[attr-defined]
    return counts
