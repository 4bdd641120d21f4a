-- The services' Kubernetes initContainer (`python -m services.common.migrate --wait-for-current`)
-- connects as catalytic_app and waits until every migration its release ships is applied; it
-- needs to read the runner's bookkeeping, nothing more. The runner creates the table before
-- applying any file, so it exists here.
GRANT SELECT ON schema_migrations TO catalytic_app;
