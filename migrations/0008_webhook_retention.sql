-- Webhook retention (WEBHOOK_RETENTION_DAYS, 30 by default): deliveries that ended longer ago
-- than the period are deleted with their attempts, and so are events that old that no delivery
-- refers to any more. PENDING deliveries, their events and their logs always stay.
--
-- The webhook service's retention task finds old events across tenants through one read-only
-- policy on webhook_events alone, keyed on the transaction-local setting
-- app.lookup_webhook_retention = 'on', and deletes inside each tenant's own transaction under
-- the ordinary isolation policies (ADR "Webhook retention: age-ordered scan, per-tenant
-- deletes").

-- The retention scan: events oldest first, with a stable tie-break for its cursor.
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at, id);

-- The retention task: read events of every tenant to find the old ones; nothing else (no
-- write, no other table).
CREATE POLICY webhook_events_retention_read ON webhook_events FOR SELECT
  USING (app_lookup('webhook_retention') = 'on');
