-- The cluster: its machines and groups, and every configuration revision with the full
-- text of the layer it changed. A layer's text at a revision is the newest row of that
-- level at or before it; NULL text: the layer was removed (a deleted group).
CREATE TABLE pvo_cluster.cluster (
    id integer PRIMARY KEY CHECK (id = 1),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pvo_cluster.grp (
    name text PRIMARY KEY
);

CREATE TABLE pvo_cluster.machine (
    name text PRIMARY KEY,
    address text NOT NULL UNIQUE,
    grp text NOT NULL REFERENCES pvo_cluster.grp (name),
    joined_at timestamptz NOT NULL DEFAULT now(),
    -- What the machine last reported: the revision it runs, and when.
    applied bigint,
    seen_at timestamptz
);

CREATE TABLE pvo_cluster.revision (
    number bigint PRIMARY KEY,
    level text NOT NULL,
    author text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    comment text NOT NULL,
    -- The revision the author's changes started from.
    base bigint NOT NULL
);

CREATE TABLE pvo_cluster.layer (
    level text NOT NULL,
    revision bigint NOT NULL REFERENCES pvo_cluster.revision (number),
    text text,
    PRIMARY KEY (level, revision)
);
