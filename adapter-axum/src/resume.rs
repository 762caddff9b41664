//! Where a reconnecting client's last event id comes from.
//!
//! Self-contained (std and `percent-encoding` only): the fuzz crate includes this file as is.

/// The id a client resumes from: the `Last-Event-ID` header, else the `lastEventId` query
/// parameter (the polyfill and the TypeScript client's fallback), else `None`.
///
/// The header wins. Its bytes are taken as sent (lossily as UTF-8): bytes that are not an id still
/// count as "an id was sent", so the stream starts with a `reset`. The query value is decoded the
/// way `URLSearchParams` encoded it (`+` is a space, `%XX` a byte). An empty value is no id.
pub(crate) fn last_event_id(header: Option<&[u8]>, query: Option<&str>) -> Option<String> {
    let id = match header {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => {
            let raw = query_values(query?, "lastEventId").next()?;
            String::from_utf8_lossy(&form_decode(raw)).into_owned()
        }
    };
    (!id.is_empty()).then_some(id)
}

/// The raw (still encoded) values of every `name=` pair of a query string, in order.
pub(crate) fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A query value's bytes, decoded the way `URLSearchParams` encoded them (`+` is a space, `%XX`
/// a byte).
pub(crate) fn form_decode(raw: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(&raw.replace('+', " ")).collect()
}

#[cfg(test)]
mod tests {
    use super::last_event_id;

    #[test]
    fn header_wins_over_query() {
        assert_eq!(
            last_event_id(Some(b"a-2"), Some("lastEventId=a-1")).as_deref(),
            Some("a-2")
        );
        assert_eq!(
            last_event_id(None, Some("x=1&lastEventId=a-1")).as_deref(),
            Some("a-1")
        );
        assert_eq!(last_event_id(None, Some("x=1")), None);
        assert_eq!(last_event_id(None, None), None);
        assert_eq!(last_event_id(Some(b""), None), None);
        assert_eq!(last_event_id(None, Some("lastEventId=")), None);
    }

    #[test]
    fn query_values_are_decoded_like_url_search_params_encoded_them() {
        // URLSearchParams encodes `~` as %7E and a space as `+`.
        assert_eq!(
            last_event_id(None, Some("lastEventId=node%7E1-5")).as_deref(),
            Some("node~1-5")
        );
        assert_eq!(
            last_event_id(None, Some("lastEventId=a+b")).as_deref(),
            Some("a b")
        );
        assert_eq!(
            last_event_id(None, Some("lastEventId=%C3%A9-1")).as_deref(),
            Some("é-1")
        );
        // Not UTF-8: still "an id was sent" (the stream starts with a reset).
        assert!(last_event_id(None, Some("lastEventId=%FF")).is_some());
        assert!(last_event_id(Some(&[0xff, 0xfe]), None).is_some());
    }
}
