"""The product's SQL: Flink SQL of the jobs' Kafka tables and queries, and PostgreSQL's
schema in `migrations/`. A package only so that a wheel carries these files (package data);
`job.sql` and `store.db` find them through `FILES`."""

from importlib.resources import files

FILES = files(__name__)
