"""Durable state: the engine, the tables, the queries, and the migrations that shape them."""
