-- A database of realistic size for the query-plan check and the RLS benchmark (loadtest/dbseed.py).
--
-- Run as the owner, who must be a superuser (devstack's is): session_replication_role =
-- replica skips the foreign-key triggers while loading, and the owner is not held to row-level
-- security. Sizes come from the transaction-local settings seed.* (dbseed.Scale); the defaults
-- there are issue 15's floor: 1,000 tenants, 100,000 lattices, 1,000,000 deliveries.
--
-- Ids are derived (md5 of a name) so that the same seed gives the same rows; times are spread
-- over the retention period (30 days) so that partial and time-ordered indexes see what they
-- would see in production: most deliveries ended, a small share pending, a few due now.

SET LOCAL session_replication_role = replica;

-- Indexes that back no constraint are dropped for the load and built again at the end: one
-- sorted build is far quicker than a million inserts into each.
CREATE TEMPORARY TABLE seed_indexes ON COMMIT DROP AS
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid);
DO $$
DECLARE index_name text;
BEGIN
  FOR index_name IN SELECT name FROM seed_indexes LOOP
    EXECUTE format('DROP INDEX %s', index_name);
  END LOOP;
END
$$;

CREATE TEMPORARY TABLE seed_size ON COMMIT DROP AS
SELECT current_setting('seed.tenants')::int AS tenants,
       current_setting('seed.users_per_tenant')::int AS users,
       current_setting('seed.lattices_per_tenant')::int AS lattices,
       current_setting('seed.webhooks_per_tenant')::int AS webhooks,
       current_setting('seed.events_per_tenant')::int AS events,
       current_setting('seed.outbox_per_tenant')::int AS outbox,
       current_setting('seed.refresh_per_user')::int AS refresh,
       current_setting('seed.keys_per_tenant')::int AS keys,
       current_setting('seed.revocations_per_tenant')::int AS revocations;

INSERT INTO tenants (id, name, plan, created_at)
SELECT md5('t' || t)::uuid, 'seed tenant ' || t,
       (ARRAY['free', 'starter', 'professional', 'enterprise'])[1 + t % 4],
       now() - make_interval(days => 60 + t % 300)
FROM seed_size, generate_series(1, tenants) AS t;

INSERT INTO users (id, tenant_id, email, password_hash, role, created_at, updated_at)
SELECT md5('u' || t || '.' || u)::uuid, md5('t' || t)::uuid,
       'user' || u || '.t' || t || '@seed.example',
       '$argon2id$v=19$m=65536,t=3,p=4$c2VlZHNlZWRzZWVk$c2VlZA', -- never verified here
       CASE WHEN u = 1 THEN 'owner' ELSE 'member' END,
       now() - make_interval(days => 60), now() - make_interval(days => 60)
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, users) AS u;

-- Each user a member of its own tenant (what migration 0013's trigger does, which replica mode
-- skips).
INSERT INTO memberships (tenant_id, user_id, email, role, created_at, updated_at)
SELECT tenant_id, id, email, role, created_at, created_at FROM users;

INSERT INTO refresh_tokens
  (id, tenant_id, user_id, family_id, token_hash, expires_at, spent_at, created_at)
SELECT md5('r' || t || '.' || u || '.' || r)::uuid, md5('t' || t)::uuid,
       md5('u' || t || '.' || u)::uuid, md5('f' || t || '.' || u || '.' || (r + 1) / 2)::uuid,
       encode(sha256(('r' || t || '.' || u || '.' || r)::bytea), 'hex'),
       now() + make_interval(days => 30 - r),
       CASE WHEN r % 2 = 1 THEN now() - make_interval(days => r) END,
       now() - make_interval(days => r)
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, users) AS u,
     generate_series(1, refresh) AS r;

INSERT INTO api_keys
  (id, tenant_id, user_id, name, prefix, secret_hash, role, created_at, last_used_at, revoked_at)
SELECT md5('k' || t || '.' || k)::uuid, md5('t' || t)::uuid, md5('u' || t || '.1')::uuid,
       'seed key ' || k,
       translate(substr(md5('k' || t || '.' || k), 1, 12), '0189', 'wxyz'),
       encode(sha256(('k' || t || '.' || k)::bytea), 'hex'), 'member',
       now() - make_interval(days => k * 7), now() - make_interval(hours => k),
       CASE WHEN k = 1 THEN now() - make_interval(days => 1) END
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, keys) AS k;

INSERT INTO revoked_access_tokens (jti, tenant_id, expires_at, revoked_at)
SELECT md5('j' || t || '.' || j)::uuid::text, md5('t' || t)::uuid,
       now() + make_interval(secs => 600 - j * 60), now() + make_interval(secs => -j * 60)
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, revocations) AS j;

INSERT INTO lattices (id, tenant_id, name, dimensions, size, vertex_count, edge_count, version,
                      checksum, blocked_count, created_at, updated_at)
SELECT md5('l' || t || '.' || l)::uuid, md5('t' || t)::uuid, 'seed lattice ' || l, 3, 10,
       1000, 2700, 1 + l % 3, md5('c' || t || '.' || l), l % 7,
       now() - make_interval(secs => (lattices - l) * 86400.0 * 30 / lattices + t),
       now() - make_interval(secs => (lattices - l) * 86400.0 * 30 / lattices + t)
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, lattices) AS l;

-- The field bytes themselves are small here: plans depend on row counts, not on TOAST.
INSERT INTO lattice_fields (lattice_id, tenant_id, version, checksum, encoding, data)
SELECT md5('l' || t || '.' || l)::uuid, md5('t' || t)::uuid, 1 + l % 3,
       md5('c' || t || '.' || l), 'raw', decode(md5('l' || t || '.' || l), 'hex')
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, lattices) AS l;

-- Sent events stay an hour (OUTBOX_SENT_RETENTION_S); every tenth tenant's newest event
-- still waits for the relay.
INSERT INTO lattice_outbox (id, tenant_id, event_type, data, occurred_at, next_attempt_at, sent_at)
SELECT md5('o' || t || '.' || o)::uuid, md5('t' || t)::uuid, 'lattice.created',
       jsonb_build_object('id', md5('l' || t || '.' || o)::uuid),
       now() - make_interval(secs => (outbox - o) * 3600.0 / outbox),
       now() - make_interval(secs => (outbox - o) * 3600.0 / outbox),
       CASE WHEN o < outbox OR t % 10 <> 0
         THEN now() - make_interval(secs => (outbox - o) * 3600.0 / outbox) END
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, outbox) AS o;

INSERT INTO webhooks (id, tenant_id, url, event_types, description, secret, created_at, ordered)
SELECT md5('w' || t || '.' || w)::uuid, md5('t' || t)::uuid,
       'https://hooks.seed.example/' || t || '/' || w, ARRAY['*'], '',
       'whsec_' || md5('s' || t || '.' || w), now() - make_interval(days => 40 - w),
       w % 5 = 0
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, webhooks) AS w;

-- Ids computed once per tenant and endpoint, not once per row.
CREATE TEMPORARY TABLE seed_webhooks ON COMMIT DROP AS
SELECT t, w, md5('t' || t)::uuid AS tenant_id, md5('w' || t || '.' || w)::uuid AS webhook_id
FROM seed_size, generate_series(1, tenants) AS t, generate_series(1, webhooks) AS w;

INSERT INTO webhook_events (id, tenant_id, type, payload, created_at)
SELECT 'evt_' || sw.t || '_' || e, sw.tenant_id, 'lattice.created', '\x7b7d'::bytea,
       now() - make_interval(secs => (events - e) * 86400.0 * 30 / events + sw.t)
FROM seed_size, seed_webhooks AS sw, generate_series(1, events) AS e
WHERE sw.w = 1;

-- Every event to every endpoint; 98% ended well, 1% dead, 1% pending: retries due later,
-- except every tenth tenant's events 100 and 200, due now (400 deliveries).
INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, ordered, status, attempt,
                                next_attempt_at, created_at, updated_at)
SELECT md5('d' || sw.t || '.' || e || '.' || sw.w)::uuid, sw.tenant_id, sw.webhook_id,
       'evt_' || sw.t || '_' || e, sw.w % 5 = 0,
       CASE e % 100 WHEN 0 THEN 'PENDING' WHEN 1 THEN 'DEAD' ELSE 'SUCCEEDED' END,
       CASE e % 100 WHEN 0 THEN 0 WHEN 1 THEN 4 ELSE 1 END,
       CASE WHEN e % 100 <> 0 THEN NULL
            WHEN e IN (100, 200) AND sw.t % 10 = 0 THEN now() - make_interval(mins => 1)
            ELSE now() + make_interval(hours => e / 100) END,
       now() - make_interval(secs => (events - e) * 86400.0 * 30 / events + sw.t),
       now() - make_interval(secs => (events - e) * 86400.0 * 30 / events + sw.t)
FROM seed_size, seed_webhooks AS sw, generate_series(1, events) AS e;

-- The delivery log: one row per delivery (its first attempt, or the queued one).
INSERT INTO webhook_attempts (id, tenant_id, delivery_id, webhook_id, number, status,
                              response_status, attempted_at, created_at)
SELECT gen_random_uuid(), d.tenant_id, d.id, d.webhook_id, 1, d.status,
       CASE d.status WHEN 'PENDING' THEN 0 WHEN 'DEAD' THEN 500 ELSE 200 END,
       CASE WHEN d.status <> 'PENDING' THEN d.created_at END, d.created_at
FROM webhook_deliveries AS d;

DO $$
DECLARE definition text;
BEGIN
  FOR definition IN SELECT d.definition FROM seed_indexes d LOOP
    EXECUTE definition;
  END LOOP;
END
$$;
