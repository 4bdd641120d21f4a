-- Lattice service: blocked-vertex counts, and the outbox its events wait in for the relay.
--
-- blocked_count is kept with every version of a field, so that AUTO paths on an unblocked
-- lattice take the closed form without scanning the field. NULL means unknown (lattices created
-- before this migration); the engine then scans.
ALTER TABLE lattices
  ADD COLUMN blocked_count bigint CHECK (blocked_count BETWEEN 0 AND vertex_count);

-- Events written in the same transaction as the change they announce, marked sent once the
-- webhook service has accepted them (PublishEvent, idempotent on the event id = `id`), and
-- deleted after OUTBOX_SENT_RETENTION_S (an hour by default).
CREATE TABLE lattice_outbox (
  id               uuid PRIMARY KEY,
  -- Publication order, oldest first, per tenant.
  seq              bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  event_type       text NOT NULL CHECK (event_type IN ('lattice.created', 'lattice.deleted',
                     'lattice.transformed', 'path.computed', 'computation.failed')),
  data             jsonb NOT NULL,
  occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- Failed PublishEvent attempts so far; the relay backs off exponentially on it.
  attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- Not before this may a relay claim the row (a claim pushes it out by a lease).
  next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_error       text,
  -- When the webhook service accepted the event; NULL while it waits.
  sent_at          timestamptz
);
CREATE INDEX lattice_outbox_due_idx ON lattice_outbox (next_attempt_at, seq)
  WHERE sent_at IS NULL;
CREATE INDEX lattice_outbox_tenant_order_idx ON lattice_outbox (tenant_id, seq)
  WHERE sent_at IS NULL;
CREATE INDEX lattice_outbox_sent_idx ON lattice_outbox (tenant_id, sent_at)
  WHERE sent_at IS NOT NULL;
ALTER TABLE lattice_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE lattice_outbox FORCE ROW LEVEL SECURITY;
-- Requests write their tenant's events; the relay claims, marks and prunes them inside the same
-- tenant's transaction, under this policy too.
CREATE POLICY lattice_outbox_isolation ON lattice_outbox
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- The relay's one cross-tenant power: reading, to find which tenants have events due, in a
-- transaction that names itself the relay (lookup_transaction(outbox_relay='lattice')). It can
-- neither write nor delete through it. Trade-off: ADR "The lattice outbox and its relay".
CREATE POLICY lattice_outbox_relay_read ON lattice_outbox FOR SELECT
  USING (app_lookup('outbox_relay') = 'lattice');
GRANT SELECT, INSERT, DELETE ON lattice_outbox TO catalytic_app;
-- Rows are never re-pointed or rewritten: only the relay's bookkeeping changes.
GRANT UPDATE (attempts, next_attempt_at, last_error, sent_at) ON lattice_outbox TO catalytic_app;
