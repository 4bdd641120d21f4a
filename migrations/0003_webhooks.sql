-- Webhook endpoints, tenant-scoped under row-level security.

CREATE TABLE webhooks (
  id                          uuid PRIMARY KEY,
  tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  url                         text NOT NULL CHECK (length(url) <= 2048),
  event_types                 text[] NOT NULL CHECK (cardinality(event_types) >= 1),
  description                 text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  enabled                     boolean NOT NULL DEFAULT true,
  disabled_reason             text NOT NULL DEFAULT '',
  secret                      text NOT NULL,
  previous_secret             text,
  previous_secret_expires_at  timestamptz,
  created_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant_listing_idx ON webhooks (tenant_id, created_at DESC, id DESC);
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY webhooks_isolation ON webhooks
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks TO catalytic_app;
