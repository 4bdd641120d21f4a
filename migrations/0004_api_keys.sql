-- API keys (`x-api-key`), tenant-scoped under row-level security.
--
-- A key is `cat_<prefix>_<secret>`; only the SHA-256 of the whole key is stored. `prefix` is
-- public (shown in listings) and is how a service finds the row before it knows the tenant,
-- through the narrow, read-only api_keys_lookup policy.

-- Foreign-key checks bypass row-level security, so a reference to a user must name the user's
-- tenant too: then a row can only point at a user of its own tenant.
ALTER TABLE users ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);

CREATE TABLE api_keys (
  id            uuid PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  -- The creator, in the same tenant; the key dies with its creator's account.
  user_id       uuid NOT NULL,
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  prefix        text NOT NULL UNIQUE CHECK (prefix ~ '^[a-z2-7]{12}$'),
  secret_hash   text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
  -- The role the key acts with.
  role          text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz,
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- Listing is newest first with a stable tie-break on id.
CREATE INDEX api_keys_tenant_listing_idx ON api_keys (tenant_id, created_at DESC, id DESC);
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_isolation ON api_keys
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- Verification reads exactly the row whose prefix the transaction names, before the tenant is
-- known; writing (last_used_at) then needs the key's tenant context.
CREATE POLICY api_keys_lookup ON api_keys FOR SELECT
  USING (prefix = app_lookup('api_key_prefix'));
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO catalytic_app;
