-- A variant of the policies for `python -m loadtest rls --policies initplans`, applied to the
-- benchmark's scratch database only (never a migration as it stands; ADR 60).
--
-- Every app_tenant_id() and app_lookup('...') in a policy becomes a scalar subquery, which
-- PostgreSQL evaluates once per statement (an InitPlan) instead of once per row where the
-- policy is a filter, and both functions become PL/pgSQL, which the planner does not inline,
-- so planning no longer parses their bodies for every table a statement touches. Meaning and
-- results are unchanged: the same setting is read once per statement instead of per row.

DO $$
DECLARE
  p record;
  fixed_qual text;
  fixed_check text;
BEGIN
  FOR p IN SELECT tablename, policyname, qual, with_check FROM pg_policies
           WHERE schemaname = 'public' LOOP
    fixed_qual := regexp_replace(
      regexp_replace(p.qual, 'app_tenant_id\(\)', '(SELECT app_tenant_id())', 'g'),
      'app_lookup\(''(\w+)''::text\)', '(SELECT app_lookup(''\1''))', 'g');
    fixed_check := regexp_replace(
      regexp_replace(p.with_check, 'app_tenant_id\(\)', '(SELECT app_tenant_id())', 'g'),
      'app_lookup\(''(\w+)''::text\)', '(SELECT app_lookup(''\1''))', 'g');
    -- format() writes NULL as an empty string: add each clause only where the policy has it.
    EXECUTE format('ALTER POLICY %I ON %I', p.policyname, p.tablename)
      || CASE WHEN fixed_qual IS NULL THEN '' ELSE format(' USING (%s)', fixed_qual) END
      || CASE WHEN fixed_check IS NULL THEN '' ELSE format(' WITH CHECK (%s)', fixed_check) END;
  END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS uuid
  LANGUAGE plpgsql STABLE
  AS $$ BEGIN RETURN NULLIF(current_setting('app.tenant_id', true), '')::uuid; END $$;

CREATE OR REPLACE FUNCTION app_lookup(name text) RETURNS text
  LANGUAGE plpgsql STABLE
  AS $$ BEGIN RETURN NULLIF(current_setting('app.lookup_' || name, true), ''); END $$;
