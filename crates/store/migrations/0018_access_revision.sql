-- A number that grows at every change that takes access away: a token revoked, a user
-- removed, a role given, changed or taken, a workspace removed. Servers that share the
-- database cache tokens and roles; each reads this number at most once a second and
-- forgets what it cached when the number moved, so such a change made through one server
-- takes effect on the others within about a second.
CREATE TABLE access_revision (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO access_revision (id, revision) VALUES (1, 0);
