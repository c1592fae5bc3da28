//! The post resource: its JSON shape and the validation of what clients send.

use serde::{Deserialize, Serialize};

/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest author name accepted, in characters.
pub const MAX_AUTHOR_CHARS: usize = 100;
/// Longest content accepted, in characters (the body limit usually stops it first).
pub const MAX_CONTENT_CHARS: usize = 1_000_000;
/// The author recorded when a client gives none.
pub const DEFAULT_AUTHOR: &str = "anonymous";

/// A stored post, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Post {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub author: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// The body of `POST /api/posts` and `PUT /api/posts/{id}` as received. Every field is
/// optional here so that a missing field is reported by [`PostInput::validate`] with a
/// message of our own; unknown fields (`id`, `createdAt` from a client echoing a post back)
/// are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostInput {
    pub title: Option<String>,
    pub content: Option<String>,
    pub author: Option<String>,
}

/// A validated post, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub title: String,
    pub content: String,
    pub author: String,
}

/// Why a post body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("title is required")]
    TitleMissing,
    #[error("title must not be blank")]
    TitleBlank,
    #[error("title must be at most {MAX_TITLE_CHARS} characters (got {0})")]
    TitleTooLong(usize),
    #[error("title must not contain control characters")]
    TitleControlChars,
    #[error("author must be at most {MAX_AUTHOR_CHARS} characters (got {0})")]
    AuthorTooLong(usize),
    #[error("author must not contain control characters")]
    AuthorControlChars,
    #[error("content must be at most {MAX_CONTENT_CHARS} characters")]
    ContentTooLong,
}

impl PostInput {
    /// Checks the input: a title of 1..=200 characters after trimming, an optional author
    /// (default `anonymous`) of at most 100 characters, optional content (default empty).
    pub fn validate(self) -> Result<NewPost, ValidationError> {
        let title = self.title.ok_or(ValidationError::TitleMissing)?;
        let title = title.trim();
        if title.is_empty() {
            return Err(ValidationError::TitleBlank);
        }
        let title_len = title.chars().count();
        if title_len > MAX_TITLE_CHARS {
            return Err(ValidationError::TitleTooLong(title_len));
        }
        if title.chars().any(char::is_control) {
            return Err(ValidationError::TitleControlChars);
        }

        let author = self.author.as_deref().map(str::trim).unwrap_or_default();
        let author = if author.is_empty() {
            DEFAULT_AUTHOR
        } else {
            author
        };
        let author_len = author.chars().count();
        if author_len > MAX_AUTHOR_CHARS {
            return Err(ValidationError::AuthorTooLong(author_len));
        }
        if author.chars().any(char::is_control) {
            return Err(ValidationError::AuthorControlChars);
        }

        let content = self.content.unwrap_or_default();
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Err(ValidationError::ContentTooLong);
        }

        Ok(NewPost {
            title: title.to_owned(),
            content,
            author: author.to_owned(),
        })
    }
}

/// Paging of `GET /api/posts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 0-based page number.
    pub page: u64,
    /// Posts per page, 1..=100.
    pub size: u64,
}

impl Page {
    pub const DEFAULT_SIZE: u64 = 20;
    pub const MAX_SIZE: u64 = 100;

    /// Parses the raw `page` and `size` query values.
    pub fn parse(page: Option<&str>, size: Option<&str>) -> Result<Self, PageError> {
        let page = match page.map(str::trim) {
            None | Some("") => 0,
            Some(p) => p
                .parse::<u64>()
                .map_err(|_| PageError::BadPage(truncate(p)))?,
        };
        let size = match size.map(str::trim) {
            None | Some("") => Self::DEFAULT_SIZE,
            Some(s) => s
                .parse::<u64>()
                .map_err(|_| PageError::BadSize(truncate(s)))?,
        };
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(PageError::SizeOutOfRange(size));
        }
        // The offset must fit the databases' signed 64-bit LIMIT/OFFSET.
        if page
            .checked_mul(size)
            .and_then(|o| i64::try_from(o).ok())
            .is_none()
        {
            return Err(PageError::PageTooLarge);
        }
        Ok(Self { page, size })
    }

    /// `LIMIT` for the query.
    pub fn limit(&self) -> i64 {
        // size <= 100 by construction.
        i64::try_from(self.size).unwrap_or(Self::DEFAULT_SIZE as i64)
    }

    /// `OFFSET` for the query.
    pub fn offset(&self) -> i64 {
        // Checked in `parse`.
        self.page
            .checked_mul(self.size)
            .and_then(|o| i64::try_from(o).ok())
            .unwrap_or(i64::MAX)
    }
}

/// Why paging parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page must be a non-negative integer (got `{0}`)")]
    BadPage(String),
    #[error("size must be an integer between 1 and 100 (got `{0}`)")]
    BadSize(String),
    #[error("size must be between 1 and 100 (got {0})")]
    SizeOutOfRange(u64),
    #[error("page is too large")]
    PageTooLarge,
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(title: Option<&str>, content: Option<&str>, author: Option<&str>) -> PostInput {
        PostInput {
            title: title.map(Into::into),
            content: content.map(Into::into),
            author: author.map(Into::into),
        }
    }

    #[test]
    fn valid_input_is_trimmed_and_defaulted() {
        let p = input(Some("  Hello  "), None, None).validate().unwrap();
        assert_eq!(p.title, "Hello");
        assert_eq!(p.content, "");
        assert_eq!(p.author, DEFAULT_AUTHOR);
        let p = input(Some("T"), Some("  body\n"), Some(" Kim "))
            .validate()
            .unwrap();
        assert_eq!(p.content, "  body\n", "content is kept verbatim");
        assert_eq!(p.author, "Kim");
    }

    #[test]
    fn title_rules() {
        assert_eq!(
            input(None, Some("c"), None).validate(),
            Err(ValidationError::TitleMissing)
        );
        assert_eq!(
            input(Some(""), None, None).validate(),
            Err(ValidationError::TitleBlank)
        );
        assert_eq!(
            input(Some(" \t\n "), None, None).validate(),
            Err(ValidationError::TitleBlank)
        );
        assert_eq!(
            input(Some("a\nb"), None, None).validate(),
            Err(ValidationError::TitleControlChars)
        );
        let ok = "가".repeat(MAX_TITLE_CHARS);
        assert!(
            input(Some(&ok), None, None).validate().is_ok(),
            "200 multi-byte chars are fine"
        );
        let long = "x".repeat(MAX_TITLE_CHARS + 1);
        assert_eq!(
            input(Some(&long), None, None).validate(),
            Err(ValidationError::TitleTooLong(201))
        );
    }

    #[test]
    fn author_rules() {
        let long = "a".repeat(MAX_AUTHOR_CHARS + 1);
        assert_eq!(
            input(Some("t"), None, Some(&long)).validate(),
            Err(ValidationError::AuthorTooLong(101))
        );
        assert_eq!(
            input(Some("t"), None, Some("   "))
                .validate()
                .unwrap()
                .author,
            DEFAULT_AUTHOR
        );
    }

    #[test]
    fn paging() {
        assert_eq!(Page::parse(None, None), Ok(Page { page: 0, size: 20 }));
        assert_eq!(
            Page::parse(Some("2"), Some("5")),
            Ok(Page { page: 2, size: 5 })
        );
        assert_eq!(Page::parse(Some("2"), Some("5")).unwrap().offset(), 10);
        assert_eq!(Page::parse(None, Some("100")).unwrap().limit(), 100);
        assert!(matches!(
            Page::parse(None, Some("0")),
            Err(PageError::SizeOutOfRange(0))
        ));
        assert!(matches!(
            Page::parse(None, Some("101")),
            Err(PageError::SizeOutOfRange(101))
        ));
        assert!(matches!(
            Page::parse(None, Some("-1")),
            Err(PageError::BadSize(_))
        ));
        assert!(matches!(
            Page::parse(Some("-1"), None),
            Err(PageError::BadPage(_))
        ));
        assert!(matches!(
            Page::parse(Some("abc"), None),
            Err(PageError::BadPage(_))
        ));
        assert!(matches!(
            Page::parse(Some(&u64::MAX.to_string()), None),
            Err(PageError::PageTooLarge)
        ));
        assert!(matches!(
            Page::parse(Some("99999999999999999999999"), None),
            Err(PageError::BadPage(_))
        ));
    }

    #[test]
    fn post_json_shape() {
        let p = Post {
            id: 1,
            title: "First Post".into(),
            content: "c".into(),
            author: "a".into(),
            created_at: "2024-01-01T00:00:00.000Z".into(),
            updated_at: "2024-01-01T00:00:00.000Z".into(),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":1,"title":"First Post","content":"c","author":"a",
                "createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-01T00:00:00.000Z"})
        );
    }
}
