-- Audit trail (issue 17, ADR 65 and 66): who did what, when, from where, per tenant.
--
-- audit_events is append-only for the services: catalytic_app may INSERT and SELECT its
-- tenant's rows and nothing else, so no bug or injection in a service can rewrite history.
-- Each tenant's events form a hash chain: seq counts 1, 2, 3, ... and each row's hash is
-- SHA-256(prev_hash || the row's canonical JSON), prev_hash being the hash of the row before
-- (32 zero bytes for the first). The services compute it (services/common/audit_chain.py),
-- so a verifier recomputes it from the columns alone: an edited row no longer matches its
-- hash, a removed one leaves a gap in seq and a broken link.
--
-- Events no tenant owns (a log-in for an unknown e-mail, signing-key rotations, operator
-- commands that name no tenant) go in the platform chain: the nil UUID, which no tenant has.
--
-- audit_chain_heads holds each chain's last seq and hash: appending locks the head row, so one
-- tenant's appends are serialised (their seq has no gaps), and a truncated tail (rows deleted
-- from the end) no longer matches the head. Retention (an operator command, as the owner)
-- deletes the oldest rows and records the last deleted row's seq and hash in pruned_seq /
-- pruned_hash, where the chain then starts; catalytic_app may not write those two columns.

CREATE TABLE audit_events (
  tenant_id       uuid        NOT NULL,
  seq             bigint      NOT NULL CHECK (seq > 0),
  id              uuid        NOT NULL UNIQUE,
  occurred_at     timestamptz NOT NULL,
  actor_type      text        NOT NULL
                    CHECK (actor_type IN ('user', 'api_key', 'admin', 'system', 'anonymous')),
  actor_id        text        NOT NULL CHECK (length(actor_id) <= 320),
  action          text        NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
  target_type     text        NOT NULL CHECK (length(target_type) <= 64),
  target_id       text        NOT NULL CHECK (length(target_id) <= 320),
  outcome         text        NOT NULL CHECK (outcome IN ('success', 'failure')),
  reason          text        NOT NULL DEFAULT '' CHECK (length(reason) <= 64),
  client_address  text        NOT NULL DEFAULT '' CHECK (length(client_address) <= 64),
  user_agent      text        NOT NULL DEFAULT '' CHECK (length(user_agent) <= 512),
  request_id      text        NOT NULL DEFAULT '' CHECK (length(request_id) <= 128),
  details         jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
  prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
  hash            bytea       NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (tenant_id, seq)
);
-- The API's time filters and the retention's cut-off.
CREATE INDEX audit_events_time_idx ON audit_events (tenant_id, occurred_at);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_events_isolation ON audit_events
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT ON audit_events TO catalytic_app;

CREATE TABLE audit_chain_heads (
  tenant_id    uuid        PRIMARY KEY,
  seq          bigint      NOT NULL DEFAULT 0 CHECK (seq >= 0),
  hash         bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                             CHECK (length(hash) = 32),
  pruned_seq   bigint      NOT NULL DEFAULT 0 CHECK (pruned_seq >= 0 AND pruned_seq <= seq),
  pruned_hash  bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                             CHECK (length(pruned_hash) = 32),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE audit_chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_chain_heads_isolation ON audit_chain_heads
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT ON audit_chain_heads TO catalytic_app;
GRANT INSERT (tenant_id) ON audit_chain_heads TO catalytic_app;
GRANT UPDATE (seq, hash, updated_at) ON audit_chain_heads TO catalytic_app;
-- Retention (`python -m services.auth.admin prune-audit`, as the owner) walks every chain:
-- the owner alone may list the heads across tenants. CURRENT_USER is the role running the
-- migrations, the tables' owner.
CREATE POLICY audit_chain_heads_retention ON audit_chain_heads FOR SELECT TO CURRENT_USER
  USING (true);
