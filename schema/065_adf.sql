--
-- ADF 1.0 (Auto-lead Data Format): a lead as the XML document dealer CRMs
-- ingest (SPEC section 4, CRM delivery).  src/adf.c writes the document;
-- lead_adf() gathers a lead's values for it.  docs/adf.md has every field,
-- where it comes from, and an example.
--

CREATE FUNCTION aimroute.adf_render(
    lead_id bigint, request_date text,
    vehicle_year integer, vehicle_make text, vehicle_model text,
    first_name text, last_name text, email text, phone text,
    street text, city text, region_code text, postal_code text, country text,
    comments text, vendor_id text, vendor_name text, provider_name text)
RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_adf_render'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.adf_render(bigint, text, integer, text, text, text, text, text, text,
                                        text, text, text, text, text, text, text, text, text) IS
    'An ADF 1.0 XML document (UTF-8 declared) of these values, elements in DTD order. NULL or blank optional values are left out; elements the DTD requires are written empty. Characters XML 1.0 forbids are dropped.';

--
-- adf_model_year: the model year a product code carries, and the model
-- without it.  A year is four digits 19xx or 20xx at the start or the end of
-- the code (trimmed), parted from the rest by spaces, dashes or
-- underscores: '2027 Sport 210' and 'SPORT-210_2027' are model year 2027
-- of 'Sport 210' and 'SPORT-210'.  A year at the start wins over one at the
-- end.  Otherwise model_year is NULL and the model is the code as it is.
--
CREATE FUNCTION aimroute.adf_model_year(product_code text, OUT model_year integer, OUT model text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN head.m IS NOT NULL THEN head.m[1]::integer
                WHEN tail.m IS NOT NULL THEN tail.m[2]::integer
           END,
           CASE WHEN head.m IS NOT NULL THEN head.m[2]
                WHEN tail.m IS NOT NULL THEN tail.m[1]
                ELSE adf_model_year.product_code
           END
      FROM (SELECT pg_catalog.btrim(adf_model_year.product_code) AS code) c,
           LATERAL (SELECT pg_catalog.regexp_match(c.code, '^((?:19|20)[0-9]{2})[ _-]+([^ _-].*)$') AS m) head,
           LATERAL (SELECT pg_catalog.regexp_match(c.code, '^(.*[^ _-])[ _-]+((?:19|20)[0-9]{2})$') AS m) tail
$$;
COMMENT ON FUNCTION aimroute.adf_model_year(text) IS
    'The model year carried by a product code (19xx or 20xx at its start or end, parted by a space, dash or underscore) and the model without it; NULL year and the code unchanged when there is none.';

--
-- lead_adf: the ADF document of a stored lead, or NULL when there is no
-- such lead.  Where each value comes from:
--   id           leads.lead_id (source "aimroute")
--   requestdate  leads.received_at in settings.timezone, ISO 8601 with the
--                UTC offset of that instant: 2026-11-29T09:15:52-05:00;
--                empty for a received_at of infinity or -infinity, which
--                has neither (nor a year)
--   year, model  adf_model_year(leads.product_code); without a year in the
--                code, the year the lead was received (settings.timezone)
--   make         brands.name of leads.brand_code; the code itself when the
--                brand is not in aimroute.brands
--   customer     leads.first_name, last_name, email, phone, address (street
--                line 1), city, state_code (regioncode), country (ISO
--                alpha-2, left out when unknown) and comment; the postal
--                code as received (trimmed), which keeps a ZIP+4 or a full
--                Canadian code, else the stored one
--   vendor       the lead's dealer: dealers.dealer_number (id) and name
--                (vendorname and contact name)
--   provider     settings.oem_name
-- Runs with the caller's rights: it shows only leads the caller can read.
--
CREATE FUNCTION aimroute.lead_adf(lead_id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT aimroute.adf_render(
               l.lead_id,
               pg_catalog.to_char(t.local_at, 'YYYY-MM-DD"T"HH24:MI:SS')
                   || CASE WHEN t.utc_offset < '0'::interval THEN '-' ELSE '+' END
                   || pg_catalog.to_char(CASE WHEN t.utc_offset < '0'::interval THEN -t.utc_offset
                                              ELSE t.utc_offset END, 'HH24:MI'),
               coalesce(v.model_year, pg_catalog.date_part('year', t.local_at)::integer),
               coalesce(b.name, l.brand_code),
               v.model,
               l.first_name, l.last_name, l.email, l.phone,
               l.address, l.city, l.state_code,
               coalesce(nullif(pg_catalog.btrim(l.postal_code_input), ''), l.postal_code),
               l.country, l.comment,
               d.dealer_number, d.name, s.oem_name)
      FROM aimroute.leads l
     CROSS JOIN aimroute.settings s
      LEFT JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
     CROSS JOIN LATERAL (SELECT CASE WHEN pg_catalog.isfinite(l.received_at)
                                     THEN l.received_at AT TIME ZONE s.timezone END AS local_at,
                                CASE WHEN pg_catalog.isfinite(l.received_at)
                                     THEN (l.received_at AT TIME ZONE s.timezone)
                                          - (l.received_at AT TIME ZONE 'UTC') END AS utc_offset) t
     CROSS JOIN LATERAL aimroute.adf_model_year(l.product_code) v
     WHERE l.lead_id = lead_adf.lead_id
$$;
COMMENT ON FUNCTION aimroute.lead_adf(bigint) IS
    'The ADF 1.0 XML document of a lead, as sent to CRM integrations; NULL when there is no such lead. docs/adf.md lists where each value comes from.';
