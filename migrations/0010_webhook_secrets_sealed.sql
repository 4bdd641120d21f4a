-- Webhook signing secrets sealed at rest (envelope encryption, ADR 56).
--
-- Expand only. The sealed forms are new nullable columns (services/common/keys/envelope.py
-- describes the bytes). The plaintext columns stay, because the release before this one reads
-- and writes them, but `secret` may now be NULL: this release writes only the sealed form.
-- `python -m services.webhook.admin encrypt-secrets` seals what is left in plaintext. A later
-- contract migration drops `secret`, `previous_secret` and the trigger below, once no release
-- that reads plaintext runs.

ALTER TABLE webhooks
  ADD COLUMN secret_sealed bytea,
  ADD COLUMN previous_secret_sealed bytea;
ALTER TABLE webhooks ALTER COLUMN secret DROP NOT NULL;

-- The release before rotates with `previous_secret = secret, secret = <new plaintext>`,
-- unaware of the sealed columns: on a row whose current secret is sealed, that would lose
-- the secret it replaces and leave a stale sealed one behind. So when an UPDATE gives
-- `secret` a new plaintext value and leaves `secret_sealed` as it was, the sealed current
-- secret becomes the sealed previous one, as that release's rotation intends.
CREATE OR REPLACE FUNCTION webhooks_plaintext_rotation() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.secret IS NOT NULL AND NEW.secret IS DISTINCT FROM OLD.secret
     AND OLD.secret_sealed IS NOT NULL
     AND NEW.secret_sealed IS NOT DISTINCT FROM OLD.secret_sealed THEN
    NEW.previous_secret_sealed := OLD.secret_sealed;
    NEW.secret_sealed := NULL;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhooks_plaintext_rotation BEFORE UPDATE OF secret ON webhooks
  FOR EACH ROW EXECUTE FUNCTION webhooks_plaintext_rotation();

-- The admin's key commands (encrypt-secrets, rewrap-secrets, ...) find the endpoints to work
-- on across tenants in a transaction that sets app.lookup_webhook_keys = 'on'; they read only
-- tenant ids there, and read and write each endpoint in its own tenant's transaction. Only the
-- role applying this migration (the tables' owner, DATABASE_ADMIN_URL) gets the policy: the
-- services never need another tenant's endpoints.
CREATE POLICY webhooks_key_maintenance_read ON webhooks FOR SELECT TO CURRENT_USER
  USING (app_lookup('webhook_keys') = 'on');
