-- Posts belong to a user and go with it (ON DELETE CASCADE).
-- depends: 0001.create-users
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE posts (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id  bigint      NOT NULL,
    title      text        NOT NULL,
    body       text        NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    -- squawk-ignore prefer-bigint-over-int -- counts one row's edits: an integer is plenty
    version    integer     NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT posts_author_id_fkey FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT posts_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT posts_body_length CHECK (char_length(body) <= 100000)
);

-- Pages are newest first (descending id). The primary key serves GET /posts; these serve
-- the filtered listings without a sort: one author's posts, and the published filter
-- with and without an author.
-- squawk-ignore prefer-robust-stmts, require-concurrent-index-creation -- the table is made in this same transaction: empty and seen by nobody yet
CREATE INDEX posts_author_id_id_idx ON posts (author_id, id DESC);
-- squawk-ignore prefer-robust-stmts, require-concurrent-index-creation -- the table is made in this same transaction: empty and seen by nobody yet
CREATE INDEX posts_author_id_published_id_idx ON posts (author_id, published, id DESC);
-- squawk-ignore prefer-robust-stmts, require-concurrent-index-creation -- the table is made in this same transaction: empty and seen by nobody yet
CREATE INDEX posts_published_id_idx ON posts (published, id DESC);
