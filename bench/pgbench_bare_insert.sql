-- One lead into aimroute.leads with routing and the delivery queue switched
-- off: run.sh disables the trigger route_lead (which also queues) around
-- this run, so the columns routing fills are supplied from the sample row
-- (a dealer of the network drawn for it, so that the foreign key check
-- runs as it does for a routed lead).
\set id random(1, :nsamples)
INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address,
                            city, state_code, country, postal_code, dealer_number, dealer_group, comment,
                            send_to_dealer, match_type, distance_miles, routed_at)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, bare_dealer_number, dealer_group, comment,
       true, bare_match_type, bare_distance_miles, now()
  FROM bench.sample_leads WHERE id = :id;
