-- Single-use join tokens (`clusterconfig jointoken`): only the SHA-256 of each token's
-- secret (hex), who made it and when, until when it works; the machine whose joininfo
-- claimed it (a second machine using the same token is refused), and when it was used
-- (in the join's own transaction) or revoked. The secret itself is never stored.
CREATE TABLE pvo_cluster.join_token (
    hash text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    claimed_by text,
    claimed_at timestamptz,
    used_by text,
    used_at timestamptz,
    revoked_by text,
    revoked_at timestamptz
);
