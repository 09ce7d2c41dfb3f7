-- One lead, routed by the C trigger on aimroute.leads and queued for
-- delivery: send_to_dealer is true (as by default), so the trigger also
-- marks it (notice_pending), in the same row; the delivery worker, or
-- aimroute.delivery_expand, queues its notice and one outbox row per
-- recipient after the commit.
\set id random(1, :nsamples)
INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address,
                            city, state_code, country, postal_code, dealer_number, dealer_group, comment,
                            send_to_dealer)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, dealer_number, dealer_group, comment,
       true
  FROM bench.sample_leads WHERE id = :id;
