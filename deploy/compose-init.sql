-- The quickstart's demo schema (run once by the postgres image at its first start).
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    owner text NOT NULL,
    balance numeric(12, 2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts (owner, balance)
SELECT 'user-' || g, round((random() * 1000)::numeric, 2) FROM generate_series(1, 1000) g;
