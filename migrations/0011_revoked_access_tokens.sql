-- Revoked access tokens, durable: the Redis denylist is rebuilt from this table whenever Redis
-- comes back without it (ADR 57, "Redis may lose everything: revocations are durable in
-- PostgreSQL, the denylist is rebuilt from them, and the services fail closed meanwhile").
--
-- Logout writes the row in the caller's tenant before it lists the jti in Redis. Any service
-- that finds the denylist gone reads the unexpired rows of every tenant through one read-only
-- policy, keyed on the transaction-local setting app.lookup_denylist_rebuild = 'on'. Expired
-- rows are found through the same policy by later logouts and deleted inside each tenant's
-- own transaction, a batch at a time, as webhook retention does (ADR 41).

CREATE TABLE revoked_access_tokens (
  -- The token's `jti`: opaque to us (ADR 45), a UUID in every token auth issues.
  jti         text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 200),
  -- No foreign key to tenants on purpose: a revocation must outlive anything it refers to
  -- until the token it revokes has expired, and then it is purged by age alone.
  tenant_id   uuid NOT NULL,
  -- The token's `exp`; verifiers accept it for their leeway (5 s) after that.
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz NOT NULL DEFAULT now()
);
-- The rebuild reads only unexpired rows; the purge finds the oldest first.
CREATE INDEX revoked_access_tokens_expiry_idx ON revoked_access_tokens (expires_at);
ALTER TABLE revoked_access_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE revoked_access_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY revoked_access_tokens_isolation ON revoked_access_tokens
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- The rebuild and the purge's scan: every tenant's revocations, read-only.
CREATE POLICY revoked_access_tokens_rebuild_read ON revoked_access_tokens FOR SELECT
  USING (app_lookup('denylist_rebuild') = 'on');
-- Rows are never rewritten: inserted, read, deleted.
GRANT SELECT, INSERT, DELETE ON revoked_access_tokens TO catalytic_app;

-- The rebuild also restores the short-lived revocation markers of API keys deleted in the last
-- minutes (services.common.denylist.API_KEY_MARKER_TTL_S), so that no verifier's cache honours
-- such a key after Redis lost its marker: revoked keys of every tenant, read-only, and no live
-- key. The rebuild reads only their ids and revocation times.
CREATE POLICY api_keys_revoked_rebuild_read ON api_keys FOR SELECT
  USING (app_lookup('api_key_revocations') = 'on' AND revoked_at IS NOT NULL);
-- The rebuild's scan of recent revocations.
CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
