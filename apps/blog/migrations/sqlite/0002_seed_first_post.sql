-- A new database starts with one post, as the original service's data.sql did.
INSERT INTO posts (title, content, author, created_at, updated_at)
SELECT
    'First Post',
    'Welcome to the blog! This post was created when the database was first set up. Write your own on the Board.',
    'admin',
    strftime('%Y-%m-%dT%H:%M:%S.000Z', 'now'),
    strftime('%Y-%m-%dT%H:%M:%S.000Z', 'now')
WHERE NOT EXISTS (SELECT 1 FROM posts);
