-- Teams (issue 16, ADR 63 and 64): a tenant has many users, a user many tenants.
--
-- contract: only two foreign keys are dropped, each replaced in the same statement by a key on
-- memberships that every row release N-1 writes satisfies (its new users get their membership
-- from the users_home_membership trigger below); no release names either constraint
--
-- memberships is the source of truth for who belongs to a tenant and with which role; the
-- services read the role there on every call (cached briefly in Redis, ADR 63).
-- users.tenant_id and users.role stay as written by release N-1: the tenant the account was
-- created in (log-in's default) and the role there, kept equal to that membership's role.
--
-- A membership names its user without a foreign key: a member of tenant B may have been
-- created in tenant A, and a foreign-key check (which bypasses row-level security) from B's
-- rows into users would tell B whether an id exists in another tenant. Only auth writes
-- memberships, for users it has just authenticated or created.

CREATE TABLE memberships (
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL,
  -- The user's login e-mail, copied (e-mails never change): the tenant lists its members
  -- without reading other tenants' users rows, and log-in finds a user's memberships by it.
  email       text NOT NULL CHECK (email = lower(email)),
  role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_email_idx ON memberships (email);

-- Every existing user is a member of its own tenant, with its role. users forces row-level
-- security on its owner too: lifted for this one read, inside this file's transaction (which
-- holds the table's lock until it commits, so nobody sees it lifted).
ALTER TABLE users NO FORCE ROW LEVEL SECURITY;
INSERT INTO memberships (tenant_id, user_id, email, role, created_at, updated_at)
  SELECT tenant_id, id, email, role, created_at, created_at FROM users;
ALTER TABLE users FORCE ROW LEVEL SECURITY;

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_isolation ON memberships
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- Log-in and "my tenants" read one user's memberships, before a tenant is chosen.
CREATE POLICY memberships_login_lookup ON memberships FOR SELECT
  USING (email = app_lookup('member_email'));
GRANT SELECT, INSERT, UPDATE, DELETE ON memberships TO catalytic_app;

-- Release N-1 creates users (register) without a membership: the trigger gives each new user
-- one in its own tenant, in the inserting transaction's tenant context. Release N inserts the
-- same row itself first; ON CONFLICT keeps it.
CREATE OR REPLACE FUNCTION users_home_membership() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  INSERT INTO memberships (tenant_id, user_id, email, role, created_at, updated_at)
    VALUES (NEW.tenant_id, NEW.id, NEW.email, NEW.role, NEW.created_at, NEW.created_at)
    ON CONFLICT (tenant_id, user_id) DO NOTHING;
  RETURN NULL;
END
$$;
CREATE TRIGGER users_home_membership AFTER INSERT ON users
  FOR EACH ROW EXECUTE FUNCTION users_home_membership();

-- A user deleted (an operator's act: no route deletes users) takes its memberships along, and
-- through them its refresh tokens and API keys, as the foreign keys to users did before: those
-- the deleting transaction may see (every one, for the tables' owner).
CREATE OR REPLACE FUNCTION users_memberships_gone() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  DELETE FROM memberships WHERE user_id = OLD.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER users_memberships_gone AFTER DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION users_memberships_gone();

-- A refresh token or an API key belongs to a member of its tenant (not to a user row of that
-- tenant): removing the member deletes them.
ALTER TABLE refresh_tokens
  DROP CONSTRAINT refresh_tokens_user_fkey,
  ADD CONSTRAINT refresh_tokens_membership_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE;
ALTER TABLE api_keys
  DROP CONSTRAINT api_keys_tenant_id_user_id_fkey,
  ADD CONSTRAINT api_keys_membership_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE;
-- Removing a member finds their refresh tokens and keys by these.
CREATE INDEX refresh_tokens_member_idx ON refresh_tokens (tenant_id, user_id);
CREATE INDEX api_keys_member_idx ON api_keys (tenant_id, user_id);

-- Invitations: only the SHA-256 of the token is stored. Pending = neither accepted nor revoked,
-- and not expired.
CREATE TABLE invitations (
  id           uuid PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  email        text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
  role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  -- The member who invited; their invitations go with them when they are removed.
  invited_by   uuid NOT NULL,
  token_hash   text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  accepted_at  timestamptz,
  accepted_by  uuid,
  revoked_at   timestamptz,
  FOREIGN KEY (tenant_id, invited_by)
    REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE
);
-- Listing (newest first) and the per-address replacement read only pending rows.
CREATE INDEX invitations_pending_idx ON invitations (tenant_id, created_at DESC, id DESC)
  WHERE accepted_at IS NULL AND revoked_at IS NULL;
CREATE INDEX invitations_inviter_idx ON invitations (tenant_id, invited_by);
ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY invitations_isolation ON invitations
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- Accepting reads exactly the row whose token hash the transaction names, before the tenant is
-- known; marking it accepted then needs the invitation's tenant context.
CREATE POLICY invitations_token_lookup ON invitations FOR SELECT
  USING (token_hash = app_lookup('invitation_token_hash'));
GRANT SELECT, INSERT, UPDATE, DELETE ON invitations TO catalytic_app;
