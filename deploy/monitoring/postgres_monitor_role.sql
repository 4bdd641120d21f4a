-- The role prometheus-postgres-exporter connects as: it can read the statistics views
-- (pg_monitor) and nothing of the tenants' data. Idempotent; run by the owner (devstack's
-- monitoring runner does it on start; a deployment runs it once as its DBA).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalytic_monitor') THEN
    CREATE ROLE catalytic_monitor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;
GRANT pg_monitor TO catalytic_monitor;
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO catalytic_monitor', current_database());
END
$$;
