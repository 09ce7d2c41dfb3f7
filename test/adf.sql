-- test/adf.sql: ADF 1.0 documents (aimroute.adf_render, aimroute.lead_adf)
-- read back through a real XML parser, PostgreSQL's own libxml2: every
-- document is well formed whatever the input, elements come in the DTD's
-- order, and every value reads back exactly, minus only the characters
-- XML 1.0 forbids.  Everything is rolled back.
--
-- Values are read with XMLTABLE, which gives an element's string value;
-- xpath() returns nodes as XML, with & and < escaped again.
BEGIN;
SELECT plan(71);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

-- adf_render with every argument optional.
CREATE FUNCTION pg_temp.render(
    lead_id bigint DEFAULT NULL, request_date text DEFAULT NULL,
    vehicle_year integer DEFAULT NULL, vehicle_make text DEFAULT NULL, vehicle_model text DEFAULT NULL,
    first_name text DEFAULT NULL, last_name text DEFAULT NULL, email text DEFAULT NULL, phone text DEFAULT NULL,
    street text DEFAULT NULL, city text DEFAULT NULL, region_code text DEFAULT NULL,
    postal_code text DEFAULT NULL, country text DEFAULT NULL, comments text DEFAULT NULL,
    vendor_id text DEFAULT NULL, vendor_name text DEFAULT NULL, provider_name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
    SELECT aimroute.adf_render(lead_id, request_date, vehicle_year, vehicle_make, vehicle_model,
                               first_name, last_name, email, phone, street, city, region_code,
                               postal_code, country, comments, vendor_id, vendor_name, provider_name)
$$;
-- The string value of the first node at path; NULL when there is none.
CREATE FUNCTION pg_temp.val(doc text, path text) RETURNS text LANGUAGE sql AS $$
    SELECT v FROM XMLTABLE('/' PASSING XMLPARSE(DOCUMENT doc) COLUMNS v text PATH path)
$$;
-- How many nodes path finds.
CREATE FUNCTION pg_temp.n(doc text, path text) RETURNS integer LANGUAGE sql AS $$
    SELECT (xpath('count(' || path || ')', XMLPARSE(DOCUMENT doc)))[1]::text::integer
$$;
-- The names of the child elements of the element at path, in order.
CREATE FUNCTION pg_temp.children(doc text, path text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg((xpath('name(' || path || '/*[' || i || '])', d))[1]::text, ' ' ORDER BY i)
      FROM (SELECT XMLPARSE(DOCUMENT doc) AS d) x,
           generate_series(1, pg_temp.n(doc, path || '/*')) AS i
$$;
-- Each element of the document with its attributes, in document order:
-- 'prospect[status=new] id[sequence=1,source=aimroute] ...'.
CREATE FUNCTION pg_temp.shape(doc text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e.name || coalesce('[' || e.attrs || ']', ''), ' ' ORDER BY e.i)
      FROM (SELECT XMLPARSE(DOCUMENT doc) AS d) x,
           generate_series(1, pg_temp.n(doc, '//*')) AS i,
           LATERAL (SELECT i, (xpath('name((//*)[' || i || '])', d))[1]::text AS name,
                           (SELECT string_agg((xpath('name(((//*)[' || i || ']/@*)[' || a || '])', d))[1]::text
                                              || '=' || (xpath('string(((//*)[' || i || ']/@*)[' || a || '])', d))[1]::text,
                                              ',' ORDER BY a)
                              FROM generate_series(1, pg_temp.n(doc, '(//*)[' || i || ']/@*')) AS a) AS attrs) e
$$;
-- The characters XML 1.0 forbids that a text value can hold.
CREATE FUNCTION pg_temp.forbidden() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(chr(c), '' ORDER BY c)
      FROM (SELECT generate_series(1, 31) AS c UNION ALL VALUES (65534), (65535)) cs
     WHERE c NOT IN (9, 10, 13)
$$;
-- What a value should read back as: itself minus the forbidden characters,
-- or NULL (left out) when nothing but white space remains.
CREATE FUNCTION pg_temp.expected(v text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN btrim(t, E' \t\n\r') = '' THEN NULL ELSE t END
      FROM (SELECT translate(v, pg_temp.forbidden(), '') AS t) x
$$;

------------------------------------------------------------------------------
-- A complete document: shape, order, attributes and values.
------------------------------------------------------------------------------
CREATE TEMP TABLE full_doc AS
SELECT pg_temp.render(42, '2026-11-29T09:15:52-05:00', 2027, 'Lakeshore Boats', 'Sport 210',
                      'Ann', 'Lee', 'ann@example.com', '+1 906 555 0100',
                      '1 Main St', 'Mackinac Island', 'MI', '49757-1234', 'US',
                      'Please call after 5', 'D100', 'Island Marine', 'Lakeshore Marine Group') AS doc;

SELECT ok(xml_is_well_formed_document(doc), 'a complete document is well formed') FROM full_doc;
SELECT is(left(doc, length(prolog)), prolog,
          'it starts with the XML declaration (UTF-8), the adf processing instruction and <adf><prospect>')
  FROM full_doc,
       (VALUES (E'<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n<adf>\n  <prospect status="new">\n')) AS p(prolog);
SELECT is(pg_temp.shape(doc),
          'adf prospect[status=new] id[sequence=1,source=aimroute] requestdate '
          'vehicle[interest=buy,status=new] year make model '
          'customer contact name[part=first] name[part=last] email phone '
          'address street[line=1] city regioncode postalcode country comments '
          'vendor id[source=aimroute] vendorname contact name[part=full] '
          'provider name[part=full]',
          'every element and attribute, in the order of the ADF 1.0 DTD')
  FROM full_doc;
SELECT is(pg_temp.children(doc, '/adf/prospect'), 'id requestdate vehicle customer vendor provider',
          'prospect: id, requestdate, vehicle, customer, vendor, provider')
  FROM full_doc;
SELECT is(ARRAY[pg_temp.val(doc, '/adf/prospect/id'),
                pg_temp.val(doc, '/adf/prospect/requestdate'),
                pg_temp.val(doc, '/adf/prospect/vehicle/year'),
                pg_temp.val(doc, '/adf/prospect/vehicle/make'),
                pg_temp.val(doc, '/adf/prospect/vehicle/model'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/name[@part="first"]'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/name[@part="last"]'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/email'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/phone'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/address/street[@line="1"]'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/address/city'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/address/regioncode'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/address/postalcode'),
                pg_temp.val(doc, '/adf/prospect/customer/contact/address/country'),
                pg_temp.val(doc, '/adf/prospect/customer/comments'),
                pg_temp.val(doc, '/adf/prospect/vendor/id'),
                pg_temp.val(doc, '/adf/prospect/vendor/vendorname'),
                pg_temp.val(doc, '/adf/prospect/vendor/contact/name[@part="full"]'),
                pg_temp.val(doc, '/adf/prospect/provider/name[@part="full"]')],
          ARRAY['42', '2026-11-29T09:15:52-05:00', '2027', 'Lakeshore Boats', 'Sport 210',
                'Ann', 'Lee', 'ann@example.com', '+1 906 555 0100',
                '1 Main St', 'Mackinac Island', 'MI', '49757-1234', 'US',
                'Please call after 5', 'D100', 'Island Marine', 'Island Marine', 'Lakeshore Marine Group'],
          'every value reads back exactly where ADF puts it (the vendor name is also its contact name)')
  FROM full_doc;
SELECT is(pg_temp.val(pg_temp.render(lead_id => 9223372036854775807, vehicle_year => 1999), '//prospect/id')
          || ' ' || pg_temp.val(pg_temp.render(vehicle_year => 1999), '//year'),
          '9223372036854775807 1999', 'the largest lead id and a year are written in full');

------------------------------------------------------------------------------
-- Escaping: markup characters read back exactly.
------------------------------------------------------------------------------
SELECT is(pg_temp.val(pg_temp.render(last_name => $$O'Brien & <Sons>$$),
                      '/adf/prospect/customer/contact/name[@part="last"]'),
          $$O'Brien & <Sons>$$, $$a last name O'Brien & <Sons> reads back exactly$$);
SELECT matches(pg_temp.render(last_name => $$O'Brien & <Sons> "Q"$$),
               '<name part="last">O&apos;Brien &amp; &lt;Sons&gt; &quot;Q&quot;</name>',
               '& < > " and '' are written as entity references');
SELECT ok(xml_is_well_formed_document(pg_temp.render(comments => 'x ]]> y <![CDATA[ z ]]>')),
          ']]> and CDATA markup in a value: well formed');
SELECT is(pg_temp.val(pg_temp.render(comments => 'x ]]> y <![CDATA[ z ]]>'), '//comments'),
          'x ]]> y <![CDATA[ z ]]>', '... and read back exactly');
SELECT is(pg_temp.val(pg_temp.render(comments => '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>&e;&amp;&#60;'),
                      '//comments'),
          '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>&e;&amp;&#60;',
          'markup, entity and character references in a value stay text');
SELECT ok(bool_and(xml_is_well_formed_document(pg_temp.render(
              lead_id => 1, request_date => v, vehicle_make => v, vehicle_model => v, first_name => v,
              last_name => v, email => v, phone => v, street => v, city => v, region_code => v,
              postal_code => v, country => v, comments => v, vendor_id => v, vendor_name => v,
              provider_name => v))),
          'markup characters in every field at once: well formed')
  FROM unnest(ARRAY['&', '<', '>', '"', '''', ']]>', '&amp;', '</adf>', '<!--', '--> x', '<?pi?>']) AS v;
SELECT is(count(*) FILTER (WHERE pg_temp.val(d, '//requestdate') = v AND pg_temp.val(d, '//make') = v
                              AND pg_temp.val(d, '//email') = v AND pg_temp.val(d, '//postalcode') = v
                              AND pg_temp.val(d, '//vendor/id') = v AND pg_temp.val(d, '//provider/name') = v),
          11::bigint, '... and each reads back exactly from every element')
  FROM unnest(ARRAY['&', '<', '>', '"', '''', ']]>', '&amp;', '</adf>', '<!--', '--> x', '<?pi?>']) AS v,
       LATERAL pg_temp.render(request_date => v, vehicle_make => v, email => v, postal_code => v,
                              vendor_id => v, provider_name => v) AS d;

------------------------------------------------------------------------------
-- Characters: forbidden ones dropped, white space and non-ASCII kept.
------------------------------------------------------------------------------
SELECT ok(xml_is_well_formed_document(pg_temp.render(comments => E'a\x01b\x08c\x0Bd\x0Ce\x1Bf\x1Fg')),
          'C0 control characters: well formed');
SELECT is(pg_temp.val(pg_temp.render(comments => E'a\x01b\x08c\x0Bd\x0Ce\x1Bf\x1Fg'), '//comments'),
          'abcdefg', '... and dropped');
SELECT is(pg_temp.val(pg_temp.render(comments => 'a' || chr(65534) || 'b' || chr(65535) || 'c'), '//comments'),
          'abc', 'U+FFFE and U+FFFF are dropped');
SELECT is(pg_temp.val(pg_temp.render(comments => E'line 1\r\nline 2\rline 3\n\tend'), '//comments'),
          E'line 1\r\nline 2\rline 3\n\tend', 'TAB, LF and CR read back exactly (CR is not turned into LF)');
SELECT matches(pg_temp.render(comments => E'a\rb'), '<comments>a&#13;b</comments>',
               '... because a CR is written as &#13;');
SELECT is(pg_temp.val(pg_temp.render(first_name => '  Ann  '), '//name[@part="first"]'), '  Ann  ',
          'a value that is not blank is kept as it is, spaces included');
SELECT is(pg_temp.val(pg_temp.render(last_name => v), '//name[@part="last"]'), v,
          'non-ASCII reads back exactly: ' || what)
  FROM (VALUES ('Zoë Ñandú-Øster 東京 Владимир 😀🚤 שלום', 'letters of several scripts and emoji'),
               (chr(127) || chr(128) || chr(133) || chr(159) || chr(160) || chr(55295) || chr(57344)
                || chr(65533) || chr(65536) || chr(1114111),
                'DEL, C1 controls, NBSP, U+D7FF, U+E000, U+FFFD, U+10000, U+10FFFF'),
               ('e' || chr(769) || ' ' || chr(8232) || chr(8233) || chr(65279) || ' x',
                'a combining accent, U+2028, U+2029, a BOM')) AS t(v, what);
SELECT is(pg_temp.val(pg_temp.render(last_name => 'a' || chr(1) || '😀' || chr(65535) || 'é'),
                      '//name[@part="last"]'),
          'a😀é', 'forbidden characters between multi-byte ones are dropped cleanly');

------------------------------------------------------------------------------
-- Long values.
------------------------------------------------------------------------------
CREATE TEMP TABLE long_doc AS
SELECT repeat('<&>"''', 200000) || repeat('😀', 100000) AS v,
       pg_temp.render(comments => repeat('<&>"''', 200000) || repeat('😀', 100000),
                      street => repeat('x', 1000000), vendor_name => repeat(']]>', 100000)) AS doc;
SELECT ok(xml_is_well_formed_document(doc), 'a document with values of a million characters: well formed')
  FROM long_doc;
SELECT ok(pg_temp.val(doc, '//comments') = v AND pg_temp.val(doc, '//street') = repeat('x', 1000000)
          AND pg_temp.val(doc, '//vendorname') = repeat(']]>', 100000),
          '... and they read back exactly')
  FROM long_doc;

------------------------------------------------------------------------------
-- NULL and blank values.
------------------------------------------------------------------------------
CREATE TEMP TABLE empty_doc AS SELECT pg_temp.render() AS doc;
SELECT ok(xml_is_well_formed_document(doc), 'every value NULL: well formed') FROM empty_doc;
SELECT is(pg_temp.shape(doc),
          'adf prospect[status=new] requestdate vehicle[interest=buy,status=new] year make model '
          'customer contact name[part=full] vendor vendorname contact name[part=full]',
          '... optional elements are left out, and the ones the DTD requires are there')
  FROM empty_doc;
SELECT is(pg_temp.val(doc, '//requestdate') || pg_temp.val(doc, '//year') || pg_temp.val(doc, '//make')
          || pg_temp.val(doc, '//model') || pg_temp.val(doc, '//customer/contact/name')
          || pg_temp.val(doc, '//vendorname') || pg_temp.val(doc, '//vendor/contact/name'),
          '', '... and empty')
  FROM empty_doc;
SELECT is(aimroute.adf_render(NULL::bigint, NULL, NULL::integer, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          doc, 'the function is not strict: all NULL arguments give that document, not NULL')
  FROM empty_doc;
SELECT is(pg_temp.render(NULL, v, NULL, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v), doc,
          format('blank strings (%s) give the same document as NULLs', to_json(v)))
  FROM empty_doc, (VALUES (''), (' '), (E' \t\r\n '), (E'\x01\x02'), (E' ' || chr(65535) || E'\x1F ')) AS b(v);
SELECT is(pg_temp.children(pg_temp.render(last_name => 'Lee'), '//customer/contact'), 'name',
          'only a last name: name part="last" alone, no first name');
SELECT is(pg_temp.shape(pg_temp.render(first_name => 'Ann')), 'adf prospect[status=new] requestdate '
          'vehicle[interest=buy,status=new] year make model customer contact name[part=first] '
          'vendor vendorname contact name[part=full]',
          'only a first name: name part="first" alone');
SELECT is(pg_temp.children(pg_temp.render(email => 'a@b.c', phone => ' '), '//customer/contact'), 'name email',
          'a blank phone is left out');
SELECT is(pg_temp.children(pg_temp.render(city => 'Mackinac Island'), '//customer/contact/address'),
          'street city', 'an address without a street still has its (empty) first street line, which the DTD requires');
SELECT is(pg_temp.n(pg_temp.render(street => ' ', city => ' ', region_code => '', postal_code => E'\t', country => ''),
                    '//address'),
          0, 'an address with every part blank is left out');
SELECT is(pg_temp.n(pg_temp.render(provider_name => '  '), '//provider'), 0,
          'a blank provider is left out');
SELECT is(pg_temp.n(pg_temp.render(vendor_id => ''), '//vendor/id'), 0, 'a blank vendor id is left out');
SELECT is(pg_temp.n(pg_temp.render(comments => E'\n'), '//comments'), 0, 'blank comments are left out');

------------------------------------------------------------------------------
-- Random strings over a wide range of code points.
------------------------------------------------------------------------------
SELECT setseed(0.4242);
CREATE TEMP TABLE random_docs AS
WITH strings AS (
    SELECT d.doc_no, f.field_no,
           (SELECT coalesce(string_agg(chr(CASE
                       WHEN x.r < 0.25 THEN 1 + floor(random() * 127)::int        -- ASCII, C0 included
                       WHEN x.r < 0.35 THEN (ARRAY[9, 10, 13, 32, 38, 60, 62, 34, 39, 93,
                                                   65534, 65535, 65533, 133])[1 + floor(random() * 14)::int]
                       WHEN x.r < 0.70 THEN x.bmp                                   -- the BMP
                       ELSE 65536 + floor(random() * 1048576)::int                  -- the other planes
                   END), ''), '')
              FROM (SELECT random() AS r,
                           (128 + floor(random() * 63360)::int) AS b
                      FROM generate_series(1, floor(random() * 40)::int + f.field_no * 0)) y,
                   -- no surrogates: they are not characters, and chr() refuses them
                   LATERAL (SELECT y.r, CASE WHEN y.b >= 55296 THEN y.b + 2048 ELSE y.b END AS bmp) x) AS v
      FROM generate_series(1, 300) AS d(doc_no), generate_series(1, 6) AS f(field_no)
)
SELECT doc_no, array_agg(v ORDER BY field_no) AS v,
       pg_temp.render(first_name => (array_agg(v ORDER BY field_no))[1],
                      last_name => (array_agg(v ORDER BY field_no))[2],
                      email => (array_agg(v ORDER BY field_no))[3],
                      phone => (array_agg(v ORDER BY field_no))[4],
                      comments => (array_agg(v ORDER BY field_no))[5],
                      provider_name => (array_agg(v ORDER BY field_no))[6]) AS doc
  FROM strings GROUP BY doc_no;

SELECT is((SELECT count(*) FROM random_docs), 300::bigint, '300 documents of random strings');
SELECT cmp_ok((SELECT count(DISTINCT x) FROM random_docs, unnest(v) x), '>', 1700::bigint,
              '... of about 1,800 different strings');
SELECT cmp_ok((SELECT count(*) FROM random_docs, unnest(v) x WHERE x ~ '[^\x01-\x7f]' AND x ~ '[\x01-\x08]'),
              '>', 100::bigint, '... many mixing non-ASCII and forbidden characters');
SELECT is((SELECT count(*) FROM random_docs WHERE NOT xml_is_well_formed_document(doc)), 0::bigint,
          '... every document is well formed');
SELECT is((SELECT array_agg(doc_no ORDER BY doc_no) FROM random_docs
            WHERE pg_temp.val(doc, '//name[@part="first"]') IS DISTINCT FROM pg_temp.expected(v[1])
               OR pg_temp.val(doc, '//name[@part="last"]') IS DISTINCT FROM pg_temp.expected(v[2])
               OR pg_temp.val(doc, '//email') IS DISTINCT FROM pg_temp.expected(v[3])
               OR pg_temp.val(doc, '//phone') IS DISTINCT FROM pg_temp.expected(v[4])
               OR pg_temp.val(doc, '//comments') IS DISTINCT FROM pg_temp.expected(v[5])
               OR pg_temp.val(doc, '//provider/name') IS DISTINCT FROM pg_temp.expected(v[6])),
          NULL, '... and every value reads back as the input minus the forbidden characters (none differ)');
SELECT cmp_ok((SELECT count(*) FROM random_docs, unnest(v) x WHERE pg_temp.expected(x) IS NULL),
              '>', 0::bigint, '... blank ones included, which are left out');

------------------------------------------------------------------------------
-- The SQL declarations.
------------------------------------------------------------------------------
SELECT is((SELECT provolatile::text || proparallel::text || proisstrict::text FROM pg_proc
            WHERE oid = 'aimroute.adf_render(bigint, text, integer, text, text, text, text, text, text, text, text, text, text, text, text, text, text, text)'::regprocedure),
          'isfalse', 'adf_render is IMMUTABLE, PARALLEL SAFE and not strict');
SELECT is((SELECT array_to_string(proargnames, ',') FROM pg_proc
            WHERE oid = 'aimroute.adf_render(bigint, text, integer, text, text, text, text, text, text, text, text, text, text, text, text, text, text, text)'::regprocedure),
          'lead_id,request_date,vehicle_year,vehicle_make,vehicle_model,first_name,last_name,email,phone,'
          'street,city,region_code,postal_code,country,comments,vendor_id,vendor_name,provider_name',
          '... with these argument names');
SELECT is((SELECT provolatile::text || prorettype::regtype::text || array_to_string(proconfig, ';') FROM pg_proc
            WHERE oid = 'aimroute.lead_adf(bigint)'::regprocedure),
          'stext' || 'search_path=pg_catalog, pg_temp', 'lead_adf is STABLE, returns text, with a pinned search_path');
SELECT ok(obj_description('aimroute.adf_render(bigint, text, integer, text, text, text, text, text, text, text, text, text, text, text, text, text, text, text)'::regprocedure, 'pg_proc') IS NOT NULL
          AND obj_description('aimroute.lead_adf(bigint)'::regprocedure, 'pg_proc') IS NOT NULL,
          'both have a comment');

------------------------------------------------------------------------------
-- Model year and model from the product code.
------------------------------------------------------------------------------
SELECT is((SELECT string_agg(format('%s=%s|%s', coalesce(c, 'NULL'), coalesce(y.model_year::text, '-'),
                                    coalesce(y.model, 'NULL')), '; ' ORDER BY n)
             FROM unnest(ARRAY['2027 Sport 210', 'Sport 210-2027', 'SPORT_210_1999', ' 2026 - X ',
                               '2026-2027', '2026', 'X12026', '20261 X', 'A 1899', '2100 Z', 'Z_2001_',
                               E'2026\tX', 'Sport 210', NULL]) WITH ORDINALITY AS t(c, n),
                  LATERAL adf_model_year(c) y),
          '2027 Sport 210=2027|Sport 210; Sport 210-2027=2027|Sport 210; SPORT_210_1999=1999|SPORT_210; '
          ' 2026 - X =2026|X; 2026-2027=2026|2027; 2026=-|2026; X12026=-|X12026; 20261 X=-|20261 X; '
          'A 1899=-|A 1899; 2100 Z=-|2100 Z; Z_2001_=-|Z_2001_; ' || E'2026\tX=-|2026\tX; ' || 'Sport 210=-|Sport 210; NULL=-|NULL',
          'adf_model_year: a 19xx/20xx year at the start or end, parted by space, dash or underscore, is taken out of the model');

------------------------------------------------------------------------------
-- lead_adf: a stored lead.
------------------------------------------------------------------------------
INSERT INTO brands VALUES ('ADF', 'Lakeshore & Sons <Boats>');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('ADF-HQ', 'Corporate', 'US', '10001'),
  ('ADF-1', $$Island Marine "North" & O'Hara$$, 'US', '49757');
INSERT INTO dealer_brands VALUES ('ADF-1', 'ADF');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('ADF-1', 'ADF', 'state', 'US', 'MI');
UPDATE settings SET default_dealer_number = 'ADF-HQ', timezone = 'America/New_York',
                    oem_name = 'Lakeshore Marine Group';
INSERT INTO leads (received_at, brand_code, product_code, first_name, last_name, email, phone,
                   address, city, state_code, country, postal_code, comment) VALUES
  ('2026-11-29 14:15:52.734+00', 'ADF', 'Sport 210-2027', 'Ann', $$O'Brien & <Sons>$$, 'ann@example.com',
   '906-555-0100', '1 Main St', 'Mackinac Island', 'MI', 'usa', ' 49757-1234 ', 'adf-full'),
  ('2026-07-04 16:00:00+00', 'ADF', '2025 Cruiser', 'Bo', NULL, NULL, NULL,
   NULL, NULL, NULL, 'US', '49757', 'adf-summer'),
  ('2026-12-31 23:30:00-08', 'ZZZ', 'X12026', NULL, 'Nobrand', NULL, NULL,
   NULL, NULL, NULL, 'XX', 'ABC', 'adf-unknown-brand'),
  ('2026-03-01 12:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, 'adf-bare');
CREATE TEMP TABLE lead_docs AS
SELECT l.comment AS tag, l.lead_id, aimroute.lead_adf(l.lead_id) AS doc
  FROM leads l WHERE l.comment LIKE 'adf-%';

SELECT is((SELECT count(*) FROM lead_docs WHERE xml_is_well_formed_document(doc)), 4::bigint,
          'lead_adf: every lead''s document is well formed');
SELECT is(doc,
          pg_temp.render(lead_id, '2026-11-29T09:15:52-05:00', 2027, 'Lakeshore & Sons <Boats>', 'Sport 210',
                         'Ann', $$O'Brien & <Sons>$$, 'ann@example.com', '906-555-0100',
                         '1 Main St', 'Mackinac Island', 'MI', '49757-1234', 'US', 'adf-full',
                         'ADF-1', $$Island Marine "North" & O'Hara$$, 'Lakeshore Marine Group'),
          'lead_adf of a complete lead: the document of its values, as docs/adf.md lists them')
  FROM lead_docs WHERE tag = 'adf-full';
SELECT is(pg_temp.val(doc, '//requestdate'), '2026-11-29T09:15:52-05:00',
          'requestdate: received_at in settings.timezone, seconds, with the UTC offset (EST)')
  FROM lead_docs WHERE tag = 'adf-full';
SELECT is(pg_temp.val(doc, '//requestdate'), '2026-07-04T12:00:00-04:00',
          '... and the offset of that instant (EDT in July)')
  FROM lead_docs WHERE tag = 'adf-summer';
SELECT is(pg_temp.val(doc, '//vehicle/year') || '|' || pg_temp.val(doc, '//vehicle/model'), '2025|Cruiser',
          'a model year at the start of the product code is the year, and leaves the model')
  FROM lead_docs WHERE tag = 'adf-summer';
SELECT is(pg_temp.val(doc, '//vehicle/year') || '|' || pg_temp.val(doc, '//vehicle/model'), '2027|X12026',
          'without a year in the product code: the year received in settings.timezone (2027 in New York, 2026 where it was sent)')
  FROM lead_docs WHERE tag = 'adf-unknown-brand';
SELECT is(pg_temp.val(doc, '//vehicle/make'), 'ZZZ', 'a brand not in aimroute.brands: the make is its code')
  FROM lead_docs WHERE tag = 'adf-unknown-brand';
SELECT is(pg_temp.val(doc, '//postalcode') || '|' || (pg_temp.n(doc, '//address/country'))::text, 'ABC|0',
          'an unknown country is left out; the postal code is sent as received')
  FROM lead_docs WHERE tag = 'adf-unknown-brand';
SELECT is(pg_temp.val(doc, '//vendor/id') || '|' || pg_temp.val(doc, '//vendorname'), 'ADF-HQ|Corporate',
          'the vendor is the lead''s dealer (here the default dealer)')
  FROM lead_docs WHERE tag = 'adf-unknown-brand';
SELECT is(pg_temp.shape(doc),
          'adf prospect[status=new] id[sequence=1,source=aimroute] requestdate vehicle[interest=buy,status=new] '
          'year make model customer contact name[part=full] comments vendor id[source=aimroute] vendorname '
          'contact name[part=full] provider name[part=full]',
          'a lead with no brand, product, name or address: a document the DTD accepts')
  FROM lead_docs WHERE tag = 'adf-bare';
SELECT is(pg_temp.val(doc, '//year') || '|' || pg_temp.val(doc, '//make') || '|' || pg_temp.val(doc, '//model'),
          '2026||', '... with the year received, and an empty make and model')
  FROM lead_docs WHERE tag = 'adf-bare';
SELECT is(pg_temp.val(doc, '//provider/name'), 'Lakeshore Marine Group', 'the provider is settings.oem_name')
  FROM lead_docs WHERE tag = 'adf-bare';
UPDATE settings SET timezone = 'Asia/Kolkata';
SELECT is(pg_temp.val(lead_adf(lead_id), '//requestdate'), '2026-11-29T19:45:52+05:30',
          'a time zone with a half-hour offset ahead of UTC')
  FROM lead_docs WHERE tag = 'adf-full';
UPDATE settings SET timezone = 'UTC';
SELECT is(pg_temp.val(lead_adf(lead_id), '//requestdate'), '2026-11-29T14:15:52+00:00',
          'UTC: +00:00')
  FROM lead_docs WHERE tag = 'adf-full';
INSERT INTO leads (received_at, brand_code, country, postal_code, email, comment) VALUES
  ('infinity', 'ADF', 'US', '49757', 'inf@example.com', 'adf-infinite'),
  ('-infinity', NULL, NULL, NULL, 'inf@example.com', 'adf-infinite');
SELECT is(array_agg(pg_temp.val(lead_adf(lead_id), '//requestdate') || '|' || pg_temp.val(lead_adf(lead_id), '//year')
                    ORDER BY lead_id),
          '{|,|}'::text[],
          'a lead received at infinity or -infinity: a document with an empty requestdate and year, not an error')
  FROM leads WHERE comment = 'adf-infinite';
SELECT is(lead_adf(-1), NULL, 'lead_adf of an unknown lead is NULL');
SELECT is(lead_adf(NULL), NULL, 'lead_adf(NULL) is NULL');
-- The caller's search_path does not matter, even one that puts functions
-- of its own before pg_catalog's.
CREATE FUNCTION public.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$;
CREATE FUNCTION public.to_char(timestamp, text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$;
SET LOCAL search_path = public, pg_catalog;
SELECT is(pg_temp.val(aimroute.lead_adf(lead_id), '//postalcode') || ' '
          || pg_temp.val(aimroute.lead_adf(lead_id), '//requestdate'), '49757-1234 2026-11-29T14:15:52+00:00',
          'lead_adf does not call functions from the caller''s search_path')
  FROM lead_docs WHERE tag = 'adf-full';
SET LOCAL search_path = aimroute, public;

SELECT * FROM finish();
ROLLBACK;
