-- One lead, routed by the PL/pgSQL baseline (bench/baseline.sql).
\set id random(1, :nsamples)
INSERT INTO bench.leads_plpgsql (brand_code, product_code, first_name, last_name, email, phone, address,
                                 city, state_code, country, postal_code, dealer_number, dealer_group, comment)
SELECT brand_code, product_code, first_name, last_name, email, phone, address,
       city, state_code, country, postal_code, dealer_number, dealer_group, comment
  FROM bench.sample_leads WHERE id = :id;
