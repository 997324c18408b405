-- Users. Emails are stored trimmed and lower-cased by the service; the unique index is on
-- lower(email) anyway, so a row written by hand cannot break case-insensitive uniqueness.
-- depends:
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE users (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL,
    name       text        NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- counts one row's edits: an integer is plenty
    version    integer     NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_length CHECK (char_length(email) BETWEEN 3 AND 320),
    CONSTRAINT users_name_length CHECK (char_length(name) BETWEEN 1 AND 100)
);

-- squawk-ignore prefer-robust-stmts, require-concurrent-index-creation -- the table is made in this same transaction: empty and seen by nobody yet
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
