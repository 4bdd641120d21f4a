-- Webhook delivery: events (the outbox), deliveries (the queue) and attempts (the log).
--
-- Every table is tenant-owned under the usual isolation policy. The delivery worker finds due
-- deliveries across tenants through one read-only policy on webhook_deliveries alone, keyed on
-- the transaction-local setting app.lookup_delivery_worker = 'on': it sees ids, tenants, times
-- and states there, never a payload, URL or secret, and can change nothing. It claims, sends
-- and records each delivery inside that delivery's own tenant transaction (ADR 33, "Webhook
-- delivery: a PostgreSQL queue with leases, found across tenants by one read-only policy").

ALTER TABLE webhooks ADD CONSTRAINT webhooks_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE webhooks
  -- Events go to this endpoint one at a time, in publication order.
  ADD COLUMN ordered boolean NOT NULL DEFAULT false,
  -- The first failed attempt since the last success; NULL while the endpoint is healthy.
  ADD COLUMN failing_since timestamptz;

-- One row per published event: the body exactly as every attempt sends and signs it.
CREATE TABLE webhook_events (
  id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  type        text NOT NULL CHECK (type IN ('lattice.created', 'lattice.deleted',
                'lattice.transformed', 'path.computed', 'computation.failed', 'webhook.test',
                'webhook.disabled')),
  payload     bytea NOT NULL CHECK (octet_length(payload) <= 262144),
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_events FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_events_isolation ON webhook_events
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_events TO catalytic_app;

-- One row per (event, endpoint): its state, its schedule and the lease of the worker sending it.
CREATE TABLE webhook_deliveries (
  id               uuid PRIMARY KEY,
  tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  webhook_id       uuid NOT NULL,
  event_id         text NOT NULL,
  -- Publication order, for ordered endpoints.
  seq              bigint GENERATED ALWAYS AS IDENTITY,
  -- Copied from the endpoint (which never changes it), so the worker's claim needs no join.
  ordered          boolean NOT NULL DEFAULT false,
  status           text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SUCCEEDED', 'DEAD')),
  -- Set while the endpoint is disabled: the delivery waits, unclaimed, until it is enabled.
  paused           boolean NOT NULL DEFAULT false,
  -- Attempts made so far.
  attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  next_attempt_at  timestamptz,
  -- A worker's claim: nobody else sends this delivery before locked_until; the token proves
  -- that the worker writing the result still holds the claim.
  locked_until     timestamptz,
  lease_token      uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, event_id) REFERENCES webhook_events (tenant_id, id) ON DELETE CASCADE
);
-- The claim: due, unpaused deliveries by due time.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
  WHERE status = 'PENDING' AND NOT paused;
-- Ordered endpoints: is an earlier delivery to this endpoint still pending? Also enable/disable.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, seq)
  WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (tenant_id, event_id);
CREATE INDEX webhook_deliveries_lease_idx ON webhook_deliveries (lease_token)
  WHERE lease_token IS NOT NULL;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_isolation ON webhook_deliveries
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
-- The delivery worker: read the queue rows of every tenant to find what is due; nothing else
-- (no write, no other table).
CREATE POLICY webhook_deliveries_worker_read ON webhook_deliveries FOR SELECT
  USING (app_lookup('delivery_worker') = 'on');
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_deliveries TO catalytic_app;

-- A delivery never changes tenant, endpoint, event or place in its endpoint's order.
CREATE FUNCTION webhook_deliveries_keep_identity() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.id <> OLD.id OR NEW.tenant_id <> OLD.tenant_id OR NEW.webhook_id <> OLD.webhook_id
     OR NEW.event_id <> OLD.event_id OR NEW.seq <> OLD.seq OR NEW.ordered <> OLD.ordered THEN
    RAISE EXCEPTION 'a webhook delivery keeps its id, tenant, endpoint, event and order'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhook_deliveries_keep_identity BEFORE UPDATE ON webhook_deliveries
  FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_keep_identity();

-- The delivery log: one row per attempt, the next one included while it is queued (PENDING).
CREATE TABLE webhook_attempts (
  id               uuid PRIMARY KEY,
  tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  delivery_id      uuid NOT NULL,
  webhook_id       uuid NOT NULL,
  -- 1 for the first attempt of the delivery.
  number           integer NOT NULL CHECK (number >= 1),
  status           text NOT NULL DEFAULT 'PENDING'
                   CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED', 'DEAD')),
  response_status  integer NOT NULL DEFAULT 0,
  response_body    text NOT NULL DEFAULT '' CHECK (octet_length(response_body) <= 16384),
  error            text NOT NULL DEFAULT '',
  duration_ms      double precision,
  -- After FAILED: when the retry is due.
  next_attempt_at  timestamptz,
  attempted_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (delivery_id, number),
  FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhook_deliveries (tenant_id, id)
    ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
-- The log of one endpoint, newest first with a stable tie-break (keyset pagination).
CREATE INDEX webhook_attempts_listing_idx
  ON webhook_attempts (tenant_id, webhook_id, created_at DESC, id DESC);
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_attempts_isolation ON webhook_attempts
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_attempts TO catalytic_app;
