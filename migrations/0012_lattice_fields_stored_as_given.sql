-- Field bytes are stored as the lattice service hands them over: it compresses with zlib when
-- that halves a field, and hands over raw bytes when it does not (services/lattice/fields.py).
-- PostgreSQL's own TOAST compression (pglz) would otherwise try again on every raw field and,
-- on a random fill with blocked vertices (repeated +inf bit patterns), spend ~90 ms of CPU per
-- 4 MiB write before giving up (ADR 67). EXTERNAL: out of line, never compressed by the server.
-- Only values written from now on are affected; existing rows stay as stored, and both read
-- back the same. Release N-1 is unaffected: it reads and writes the same column.
ALTER TABLE lattice_fields ALTER COLUMN data SET STORAGE EXTERNAL;
