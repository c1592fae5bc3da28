-- A new database starts with one post, as the original service's data.sql did.
INSERT INTO posts (title, content, author, created_at, updated_at)
SELECT
    'First Post',
    'Welcome to the blog! This post was created when the database was first set up. Write your own on the Board.',
    'admin',
    DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%s.000Z'),
    DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%s.000Z')
FROM DUAL
WHERE NOT EXISTS (SELECT 1 FROM posts);
