--
-- loader: aimroute.load_postal_codes() on a file with broken rows.
--
\getenv abs_srcdir PG_ABS_SRCDIR
\set broken :abs_srcdir '/test/data/broken_postal.tsv'
\set truncated :abs_srcdir '/test/data/truncated.tsv.gz'
\set garbage :abs_srcdir '/test/data/garbage.tsv.gz'
DELETE FROM aimroute.postal_codes WHERE country = 'US' AND postal_code IN ('49757', '00501');

SELECT aimroute.load_postal_codes(:'broken') AS rows_loaded;

-- What was loaded, normalized.
SELECT country, postal_code, place_name, state_code, county,
       round(aimroute.st_y(centroid::aimroute.geometry)::numeric, 4) AS lat,
       round(aimroute.st_x(centroid::aimroute.geometry)::numeric, 4) AS lon
  FROM aimroute.postal_codes
 WHERE (country, postal_code) IN (('US', '49757'), ('US', '00501'), ('CA', 'P0S'),
        ('CA', 'V0N'), ('US', '09001'), ('US', '10200'), ('US', '12212'),
        ('US', '12213'), ('US', '12215'), ('CA', 'H0H'), ('CA', 'K1A0B1'))
 ORDER BY country, postal_code;

-- Every rejected or flawed line, and why: nothing is silently dropped.
SELECT line_number, postal_code, rejected, problem
  FROM aimroute.postal_code_load_issues i
  JOIN aimroute.postal_code_loads l USING (load_id)
 WHERE l.path = :'broken'
 ORDER BY line_number;
SELECT rows_loaded, rows_flawed, rows_rejected, finished_at IS NOT NULL AS finished
  FROM aimroute.postal_code_loads WHERE path = :'broken';

-- Loading again is an upsert: the same counts, no duplicates.
SET client_min_messages = error;
SELECT aimroute.load_postal_codes(:'broken', 'GeoNames') AS rows_loaded_again;
RESET client_min_messages;
SELECT count(*) AS mackinac_rows FROM aimroute.postal_codes WHERE postal_code = '49757';

-- Files that cannot be read at all are errors, and the load rolls back.
\set VERBOSITY default
SELECT aimroute.load_postal_codes('/nonexistent/postal.tsv');
SELECT aimroute.load_postal_codes(:'broken', 'csv');
SELECT aimroute.load_postal_codes(:'truncated');
SELECT count(*) AS loads_recorded FROM aimroute.postal_code_loads;
-- A gzip file of junk is read, and its one line rejected.
SELECT aimroute.load_postal_codes(:'garbage');

-- Only roles that may read server files may load.
CREATE ROLE aimroute_regress_loader;
GRANT USAGE ON SCHEMA aimroute TO aimroute_regress_loader;
GRANT EXECUTE ON FUNCTION aimroute.load_postal_codes(text, text) TO aimroute_regress_loader;
SET ROLE aimroute_regress_loader;
SELECT aimroute.load_postal_codes(:'broken');
RESET ROLE;
DROP OWNED BY aimroute_regress_loader;
DROP ROLE aimroute_regress_loader;
