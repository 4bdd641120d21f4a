-- Every foreign key between tenant-owned tables names the tenant too.
--
-- Foreign-key checks bypass row-level security: with a single-column key, tenant B could insert
-- a row of its own pointing at tenant A's row (and learn that the id exists). A key on
-- (tenant_id, id) can only match a parent of the row's own tenant, which WITH CHECK pins to the
-- transaction's tenant. users (tenant_id, id) is unique since 0004.

ALTER TABLE lattices ADD CONSTRAINT lattices_tenant_id_id_key UNIQUE (tenant_id, id);

ALTER TABLE refresh_tokens
  DROP CONSTRAINT refresh_tokens_user_id_fkey,
  ADD CONSTRAINT refresh_tokens_user_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE;

ALTER TABLE lattice_fields
  DROP CONSTRAINT lattice_fields_lattice_id_fkey,
  ADD CONSTRAINT lattice_fields_lattice_fkey
    FOREIGN KEY (tenant_id, lattice_id) REFERENCES lattices (tenant_id, id) ON DELETE CASCADE;
