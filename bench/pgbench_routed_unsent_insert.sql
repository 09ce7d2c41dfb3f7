-- One lead, routed by the C trigger on aimroute.leads and not sent:
-- send_to_dealer false, so the trigger queues nothing.  Routing alone, the cost the SPEC's
-- 1.5x target is about.
\set id random(1, :nsamples)
INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address,
                            city, state_code, country, postal_code, dealer_number, dealer_group, comment,
                            send_to_dealer)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, dealer_number, dealer_group, comment,
       false
  FROM bench.sample_leads WHERE id = :id;
