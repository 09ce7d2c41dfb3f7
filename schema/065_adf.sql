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

