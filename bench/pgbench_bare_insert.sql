-- One lead into aimroute.leads with routing switched off: run.sh disables
-- the route_lead trigger around this run, so the columns routing fills are
-- supplied from the sample row (the dealer the C routing chose for it, so
-- that the foreign key check finds the same dealers).
\set id random(1, :nsamples)
INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address,
                            city, state_code, country, postal_code, dealer_number, dealer_group, comment,
                            match_type, distance_miles, routed_at)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, bare_dealer_number, dealer_group, comment,
       bare_match_type, bare_distance_miles, now()
  FROM bench.sample_leads WHERE id = :id;
