-- Lattice metadata and durable field storage, tenant-scoped under row-level security.

CREATE TABLE lattices (
  id            uuid PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  dimensions    integer NOT NULL CHECK (dimensions BETWEEN 1 AND 10),
  size          integer NOT NULL CHECK (size BETWEEN 2 AND 100),
  vertex_count  bigint NOT NULL CHECK (vertex_count BETWEEN 2 AND 16777216),
  edge_count    bigint NOT NULL,
  version       bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
  checksum      text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Listing is newest first with a stable tie-break on id (keyset pagination).
CREATE INDEX lattices_tenant_listing_idx ON lattices (tenant_id, created_at DESC, id DESC);
ALTER TABLE lattices ENABLE ROW LEVEL SECURITY;
ALTER TABLE lattices FORCE ROW LEVEL SECURITY;
CREATE POLICY lattices_isolation ON lattices
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON lattices TO catalytic_app;

-- The field bytes of the current version: zlib-compressed little-endian float32, with the
-- checksum of the uncompressed bytes verified on every read.
CREATE TABLE lattice_fields (
  lattice_id   uuid PRIMARY KEY REFERENCES lattices (id) ON DELETE CASCADE,
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  version      bigint NOT NULL,
  checksum     text NOT NULL,
  encoding     text NOT NULL DEFAULT 'zlib' CHECK (encoding IN ('zlib', 'raw')),
  data         bytea NOT NULL
);
ALTER TABLE lattice_fields ENABLE ROW LEVEL SECURITY;
ALTER TABLE lattice_fields FORCE ROW LEVEL SECURITY;
CREATE POLICY lattice_fields_isolation ON lattice_fields
  USING (tenant_id = app_tenant_id()) WITH CHECK (tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON lattice_fields TO catalytic_app;
