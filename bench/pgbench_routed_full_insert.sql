-- One lead as applications insert it, for a dealer that is fully set up:
-- routed by the C trigger and sent (send_to_dealer true), drawn from
-- bench.sample_full, whose leads all go to a dealer with a To contact, a CC
-- contact and a CRM integration.  Queued: three messages per lead (or, with
-- a deferred queue, the lead's mark for the delivery worker to expand).
\set id random(1, :nfull)
INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address,
                            city, state_code, country, postal_code, dealer_number, dealer_group, comment,
                            send_to_dealer)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, dealer_number, dealer_group, comment,
       true
  FROM bench.sample_full WHERE id = :id;
