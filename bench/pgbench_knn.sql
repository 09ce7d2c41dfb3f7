-- The plain PostGIS nearest-dealer query from a sample lead's centre point:
-- the GiST index walked in distance order, no brand, activity or rule.
\set id random(1, :npoints)
SELECT (SELECT d.dealer_number
          FROM aimroute.dealers d
         WHERE d.country = p.country
         ORDER BY d.location <-> p.centroid
         LIMIT 1)
  FROM bench.sample_points p WHERE p.id = :id;
