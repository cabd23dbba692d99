"""Tenant database access: connection pools, migrations and the repositories (plain SQL, psycopg 3)."""
