-- Empty both tables and restart their identities, so that every seed starts from the same
-- state and a seeded row has the id it had last time.
TRUNCATE users, posts RESTART IDENTITY CASCADE
