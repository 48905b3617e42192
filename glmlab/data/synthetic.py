"""Structured text for the multi-token-prediction experiments: JSON records and SQL queries
whose syntax makes the next few tokens predictable (docs/architecture.md, "Multi-Token
Prediction"). Deterministic for a seed."""

from __future__ import annotations

import json
import random

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"]
CITIES = ["Beijing", "Berlin", "Lagos", "Lima", "Oslo", "Paris", "Seoul", "Sydney", "Tokyo", "Toronto"]
TABLES = {
    "users": ["id", "name", "city", "age", "created_at"],
    "orders": ["id", "user_id", "amount", "status", "created_at"],
    "items": ["id", "order_id", "sku", "quantity", "price"],
}
STATUSES = ["paid", "pending", "shipped", "refunded"]


def json_record(rng: random.Random) -> str:
    record = {
        "id": rng.randint(1, 99999),
        "name": rng.choice(NAMES),
        "city": rng.choice(CITIES),
        "age": rng.randint(18, 90),
        "active": rng.random() < 0.7,
        "tags": rng.sample(["admin", "beta", "new", "vip", "staff"], rng.randint(0, 3)),
        "balance": round(rng.uniform(0, 5000), 2),
    }
    return json.dumps(record)


def sql_query(rng: random.Random) -> str:
    table = rng.choice(list(TABLES))
    cols = TABLES[table]
    kind = rng.random()
    if kind < 0.5:
        picked = ", ".join(rng.sample(cols, rng.randint(1, len(cols))))
        col = rng.choice(cols[1:])
        op = rng.choice(["=", ">", "<"])
        query = f"SELECT {picked} FROM {table} WHERE {col} {op} {rng.randint(1, 500)}"
        if rng.random() < 0.5:
            query += f" ORDER BY {rng.choice(cols)} {rng.choice(['ASC', 'DESC'])}"
        if rng.random() < 0.4:
            query += f" LIMIT {rng.choice([10, 20, 50, 100])}"
        return query + ";"
    if kind < 0.8:
        value = lambda c: f"'{rng.choice(STATUSES)}'" if c == "status" else str(rng.randint(1, 999))
        values = ", ".join(value(c) for c in cols)
        return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({values});"
    col = rng.choice(cols[1:])
    return f"UPDATE {table} SET {col} = {rng.randint(1, 999)} WHERE id = {rng.randint(1, 99999)};"


def synthetic_documents(seed: int, n_docs: int = 2000, lines_per_doc: int = 12) -> list[str]:
    """`n_docs` documents, each a run of JSON lines or of SQL statements (about 1.5 MB)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        make = json_record if rng.random() < 0.5 else sql_query
        docs.append("\n".join(make(rng) for _ in range(lines_per_doc)) + "\n")
    return docs
