-- Application role, tenant-context helper, tenants and users (row-level security from day one).
--
-- Services connect as catalytic_app: not the owner of any table, no BYPASSRLS. Every
-- tenant-owned table has RLS ENABLED and FORCED, with policies on app_tenant_id(), which a
-- service sets per transaction with set_config('app.tenant_id', ..., true).

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalytic_app') THEN
    CREATE ROLE catalytic_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
END
$$;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO catalytic_app', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO catalytic_app;

-- The tenant of the current transaction; NULL (matching no row) when unset.
CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS uuid
  LANGUAGE sql STABLE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- A per-transaction lookup key (for log-in by e-mail and token look-ups, which happen before
-- the tenant is known); NULL when unset.
CREATE OR REPLACE FUNCTION app_lookup(name text) RETURNS text
  LANGUAGE sql STABLE
  AS $$ SELECT NULLIF(current_setting('app.lookup_' || name, true), '') $$;

CREATE TABLE tenants (
  id          uuid PRIMARY KEY,
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  plan        text NOT NULL DEFAULT 'free'
              CHECK (plan IN ('free', 'starter', 'professional', 'enterprise')),
  created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_isolation ON tenants
  USING (id = app_tenant_id()) WITH CHECK (id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants TO catalytic_app;

CREATE TABLE users (
  id             uuid PRIMARY KEY,
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  email          text NOT NULL CHECK (email = lower(email)),
  password_hash  text NOT NULL,
  role           text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
-- One account per e-mail across the platform (log-in names no tenant).
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_tenant_idx ON users (tenant_id);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_isolation ON users
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- Log-in reads exactly the row whose e-mail the transaction names, before the tenant is known.
CREATE POLICY users_login_lookup ON users FOR SELECT
  USING (email = app_lookup('email'));
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO catalytic_app;

CREATE TABLE refresh_tokens (
  id           uuid PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  family_id    uuid NOT NULL,
  token_hash   text NOT NULL UNIQUE,
  expires_at   timestamptz NOT NULL,
  spent_at     timestamptz,
  revoked_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY refresh_tokens_isolation ON refresh_tokens
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
CREATE POLICY refresh_tokens_lookup ON refresh_tokens FOR SELECT
  USING (token_hash = app_lookup('refresh_token_hash'));
GRANT SELECT, INSERT, UPDATE, DELETE ON refresh_tokens TO catalytic_app;
