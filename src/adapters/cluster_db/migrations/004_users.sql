-- The cluster's one user base (users with their roles, states, password hashes, SSH keys
-- and API token hashes; the custom roles): each change is a revision holding the whole
-- base as the JSON a member keeps in its users.json, who made it on which machine, when,
-- what it changed, and the revision it started from. The newest row is the user base.
CREATE TABLE pvo_cluster.users_revision (
    number bigint PRIMARY KEY,
    author text NOT NULL,
    machine text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    what text NOT NULL,
    base bigint NOT NULL,
    users text NOT NULL
);
