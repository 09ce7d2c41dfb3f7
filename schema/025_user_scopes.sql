--
-- user_scopes: which dealers or regions a role may see.
--
CREATE TABLE aimroute.user_scopes (
    scope_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role_name      name NOT NULL,
    dealer_number  text REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    region         text,
    email          text CONSTRAINT user_scopes_email_check CHECK (aimroute.email_is_valid(email)),
    CONSTRAINT user_scopes_one_scope CHECK ((dealer_number IS NULL) <> (region IS NULL))
);
CREATE UNIQUE INDEX user_scopes_unique_idx ON aimroute.user_scopes (role_name, dealer_number, region) NULLS NOT DISTINCT;
COMMENT ON TABLE aimroute.user_scopes IS
    'What each region or dealer user may see: one row per role and dealer (dealer users) or per role and region (region users, by aimroute.dealers.region). A role also has the scopes of the roles it is a member of.';
COMMENT ON COLUMN aimroute.user_scopes.email IS
    'The email address of the person who logs in as role_name: the only viewer_email with which that role''s aimroute.mark_viewed counts (when it is a ''Leads: Emails To'' contact of the dealer holding the lead). NULL: the role''s mark_viewed never counts.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.user_scopes', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.user_scopes', 'scope_id')::regclass, '');

CREATE FUNCTION aimroute.user_scopes_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = NEW.role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', NEW.role_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'CREATE ROLE it first, and GRANT it aimroute_dealer or aimroute_region.';
    END IF;
    IF (NEW.dealer_number IS NULL) = (NEW.region IS NULL) THEN
        RAISE EXCEPTION 'a user scope names a dealer or a region, not both and not neither'
            USING ERRCODE = 'check_violation',
                  HINT = 'Insert one row per dealer (dealer_number) or per region (region).';
    END IF;
    NEW.email := nullif(btrim(NEW.email), '');
    IF NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for role "%"', quote_literal(NEW.email), NEW.role_name
            USING ERRCODE = 'check_violation',
                  HINT = 'Give the one address of the person who logs in as this role, such as ann@dealer.example.com, or NULL.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER user_scopes_validate BEFORE INSERT OR UPDATE ON aimroute.user_scopes
    FOR EACH ROW EXECUTE FUNCTION aimroute.user_scopes_validate();

--
-- visible_dealers: the dealers the current role may see, by its scopes
-- and those of the roles it belongs to.  Policies call it once per query
-- (as an initplan, "(SELECT aimroute.visible_dealers())"), not per row.
--
CREATE FUNCTION aimroute.visible_dealers() RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT d.dealer_number), '{}')
      FROM aimroute.user_scopes u
      JOIN aimroute.dealers d ON d.dealer_number = u.dealer_number OR d.region = u.region
     WHERE u.role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                            WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION aimroute.visible_dealers() IS
    'The dealer numbers the current role may see through aimroute.user_scopes (its own scopes and those of the roles it is a member of).';

-- Row-level security: admins see and change every scope; a region or
-- dealer user sees its own (and those of the roles it is a member of).
ALTER TABLE aimroute.user_scopes ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.user_scopes TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY own_scopes ON aimroute.user_scopes FOR SELECT TO aimroute_region, aimroute_dealer
    USING (role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                          WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')));
GRANT SELECT ON aimroute.user_scopes TO aimroute_region, aimroute_dealer;
