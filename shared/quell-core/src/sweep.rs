//! Posture sweeps, the pure part: reading an IAM credential report, judging dormancy against an
//! injected time, and tying report slots (`access_key_1`/`_2`) to key ids without guessing.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::InputError;

/// One access-key slot of a credential-report row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeySlot {
    /// 1 or 2.
    pub slot: u8,
    pub active: bool,
    /// When the key in this slot was created or last rotated.
    pub last_rotated: Option<OffsetDateTime>,
    /// `None`: never used (`N/A`), or no information.
    pub last_used: Option<OffsetDateTime>,
}

/// One user's row of the credential report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRow {
    pub user: String,
    pub arn: String,
    pub created: Option<OffsetDateTime>,
    pub password_enabled: bool,
    pub password_last_used: Option<OffsetDateTime>,
    /// When the password was set or last changed.
    pub password_last_changed: Option<OffsetDateTime>,
    pub keys: Vec<KeySlot>,
}

/// Splits CSV text into records (RFC 4180: fields may be quoted, a quoted field may hold
/// commas, line breaks and doubled quotes). IAM names may contain commas, so a plain split on
/// `,` would shift every later column. Returns (line number, fields) per non-empty record.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, InputError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut chars = text.chars().peekable();
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1
                    && fields.first().is_some_and(|f| f.trim().is_empty())
                    && !was_quoted)
                {
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                was_quoted = false;
                line += 1;
                start_line = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(InputError::Invalid {
            pointer: format!("credential report line {start_line}"),
            value: crate::error::clip(&field),
            expected: "a closed quoted field",
        });
    }
    if !field.is_empty() || !fields.is_empty() || was_quoted {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

/// `true`/`TRUE`/`True`; anything else is false.
fn flag(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("true")
}

/// Parses a credential report (CSV). The root row (`<root_account>`) is skipped: IAM policies
/// cannot contain root. Every row must have exactly the header's columns, and its `arn` must
/// be the IAM user ARN of its `user` (any path): a row that disagrees with itself is an error,
/// never acted on. Unknown extra columns are ignored; missing required columns are an error.
pub fn parse_credential_report(csv: &str) -> Result<Vec<CredentialRow>, InputError> {
    let mut records = csv_records(csv)?.into_iter();
    let (_, header) = records.next().ok_or_else(|| InputError::Missing {
        pointer: "credential report".into(),
        expected: "a header line",
    })?;
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let col = |name: &'static str| -> Result<usize, InputError> {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(InputError::Missing {
                pointer: format!("credential report column {name}"),
                expected: "the column in the header",
            })
    };
    let user = col("user")?;
    let arn = col("arn")?;
    let created = col("user_creation_time")?;
    let pw = col("password_enabled")?;
    let pw_used = col("password_last_used")?;
    let pw_changed = col("password_last_changed")?;
    let slots = [
        (
            1u8,
            col("access_key_1_active")?,
            col("access_key_1_last_rotated")?,
            col("access_key_1_last_used_date")?,
        ),
        (
            2u8,
            col("access_key_2_active")?,
            col("access_key_2_last_rotated")?,
            col("access_key_2_last_used_date")?,
        ),
    ];
    let mut out = Vec::new();
    for (line, cells) in records {
        let pointer = || format!("credential report line {line}");
        if cells.len() != header.len() {
            return Err(InputError::Invalid {
                pointer: pointer(),
                value: crate::error::clip(&cells.join(",")),
                expected: "exactly as many cells as the header",
            });
        }
        let get = |i: usize| cells.get(i).map_or("", |c| c.trim());
        if get(user) == "<root_account>" {
            continue;
        }
        if !user_matches_arn(get(user), get(arn)) {
            return Err(InputError::Invalid {
                pointer: pointer(),
                value: crate::error::clip(&format!("{},{}", get(user), get(arn))),
                expected: "a user name and the IAM user ARN that ends in it",
            });
        }
        out.push(CredentialRow {
            user: get(user).to_string(),
            arn: get(arn).to_string(),
            created: date(get(created)),
            password_enabled: flag(get(pw)),
            password_last_used: date(get(pw_used)),
            password_last_changed: date(get(pw_changed)),
            keys: slots
                .iter()
                .map(|&(slot, a, r, u)| KeySlot {
                    slot,
                    active: flag(get(a)),
                    last_rotated: date(get(r)),
                    last_used: date(get(u)),
                })
                .collect(),
        });
    }
    Ok(out)
}

/// `arn:<partition>:iam::<account>:user/<path/>name` whose last segment is `user`.
fn user_matches_arn(user: &str, arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource] => {
            crate::model::ids::is_account(account)
                && crate::model::ids::is_iam_name(user)
                && resource
                    .strip_prefix("user/")
                    .is_some_and(|rest| rest.rsplit('/').next() == Some(user))
        }
        _ => false,
    }
}

/// A report timestamp; the sentinels `N/A`, `no_information`, `not_supported` are `None`.
fn date(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Why a credential is (or is not) dormant, for the sweep report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Dormancy {
    /// Last used (or, never used, created) before the cut-off.
    Dormant {
        since: String,
        never_used: bool,
    },
    Recent {
        last: String,
    },
    Inactive,
    /// No date at all: not provably dormant, left alone.
    Unknown,
}

/// Judges one key slot against `now - days`.
pub fn key_dormancy(k: &KeySlot, now: OffsetDateTime, days: u32) -> Dormancy {
    if !k.active {
        return Dormancy::Inactive;
    }
    let cutoff = now - time::Duration::days(i64::from(days));
    let (t, never_used) = match (k.last_used, k.last_rotated) {
        (Some(u), _) => (u, false),
        (None, Some(r)) => (r, true),
        (None, None) => return Dormancy::Unknown,
    };
    let stamp = crate::clock::rfc3339_seconds(t);
    if t < cutoff {
        Dormancy::Dormant {
            since: stamp,
            never_used,
        }
    } else {
        Dormancy::Recent { last: stamp }
    }
}

/// Judges a console password: enabled and unused (or, never used, since it was set: a password
/// added to an old user is not old).
pub fn password_dormancy(row: &CredentialRow, now: OffsetDateTime, days: u32) -> Dormancy {
    if !row.password_enabled {
        return Dormancy::Inactive;
    }
    let row_key = KeySlot {
        slot: 0,
        active: true,
        last_rotated: row.password_last_changed,
        last_used: row.password_last_used,
    };
    key_dormancy(&row_key, now, days)
}

/// A key as `ListAccessKeys` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub id: String,
    pub active: bool,
    pub created: OffsetDateTime,
}

/// How a dormant slot was tied to a key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "pairing")]
pub enum Pairing {
    /// Exactly one active key was created at the slot's rotation time (to the second).
    ByCreation { key: String },
    /// Several keys share the time: every one of them is dormant, so all are named.
    AllDormant { keys: Vec<String> },
    /// The keys cannot be told apart and not all are dormant: never guess; confirm with
    /// `GetAccessKeyLastUsed` on these candidates.
    NeedsLastUsed { candidates: Vec<String> },
    /// No active key matches: the report is older than the key list (rotated since).
    NoMatch,
}

/// Ties the dormant slots of a row to key ids from one `ListAccessKeys`. `dormant` holds the
/// dormant slot numbers; the report's slot order is by creation (slot 1 is the older key).
pub fn pair_slots(row: &CredentialRow, dormant: &[u8], keys: &[ListedKey]) -> Vec<(u8, Pairing)> {
    let same_second =
        |a: OffsetDateTime, b: OffsetDateTime| a.unix_timestamp() == b.unix_timestamp();
    dormant
        .iter()
        .filter_map(|&slot| {
            let s = row.keys.iter().find(|k| k.slot == slot)?;
            let rotated = s.last_rotated?;
            let matches: Vec<&ListedKey> = keys
                .iter()
                .filter(|k| k.active && same_second(k.created, rotated))
                .collect();
            let pairing = match matches.as_slice() {
                [] => Pairing::NoMatch,
                [one] => Pairing::ByCreation {
                    key: one.id.clone(),
                },
                many => {
                    // Two keys created in the same second: the report cannot say which slot is
                    // which. Safe only if both slots are dormant.
                    let twins: Vec<u8> = row
                        .keys
                        .iter()
                        .filter(|k| {
                            k.active && k.last_rotated.is_some_and(|r| same_second(r, rotated))
                        })
                        .map(|k| k.slot)
                        .collect();
                    let ids: Vec<String> = many.iter().map(|k| k.id.clone()).collect();
                    if twins.iter().all(|t| dormant.contains(t)) {
                        Pairing::AllDormant { keys: ids }
                    } else {
                        Pairing::NeedsLastUsed { candidates: ids }
                    }
                }
            };
            Some((slot, pairing))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

    fn report() -> String {
        format!(
            "{HEADER}\n<root_account>,arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,not_supported,2026-11-01T00:00:00+00:00,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n\
alice,arn:aws:iam::111122223333:user/alice,2024-01-01T00:00:00+00:00,true,no_information,2024-01-01T00:00:00+00:00,N/A,false,true,2024-01-01T00:00:05+00:00,N/A,N/A,N/A,true,2026-11-01T00:00:00+00:00,2026-11-20T10:00:00+00:00,us-east-1,s3,false,N/A,false,N/A\n"
        )
    }

    #[test]
    fn parses_rows_skips_root_and_reads_sentinels_as_none() {
        let rows = parse_credential_report(&report()).unwrap();
        assert_eq!(rows.len(), 1);
        let a = &rows[0];
        assert_eq!(a.user, "alice");
        assert!(a.password_enabled && a.password_last_used.is_none());
        assert_eq!(a.keys[0].last_used, None);
        assert_eq!(a.keys[1].last_used, Some(datetime!(2026-11-20 10:00 UTC)));
    }

    #[test]
    fn dormancy_uses_last_use_then_creation() {
        let rows = parse_credential_report(&report()).unwrap();
        let now = datetime!(2026-11-23 12:00 UTC);
        assert!(matches!(
            key_dormancy(&rows[0].keys[0], now, 90),
            Dormancy::Dormant {
                never_used: true,
                ..
            }
        ));
        assert!(matches!(
            key_dormancy(&rows[0].keys[1], now, 90),
            Dormancy::Recent { .. }
        ));
        assert!(matches!(
            password_dormancy(&rows[0], now, 90),
            Dormancy::Dormant { .. }
        ));
        let unknown = KeySlot {
            slot: 1,
            active: true,
            last_rotated: None,
            last_used: None,
        };
        assert_eq!(key_dormancy(&unknown, now, 90), Dormancy::Unknown);
    }

    #[test]
    fn pairing_never_guesses() {
        let t = datetime!(2024-01-01 00:00:05 UTC);
        let row = CredentialRow {
            user: "u".into(),
            arn: "a".into(),
            created: None,
            password_enabled: false,
            password_last_used: None,
            password_last_changed: None,
            keys: vec![
                KeySlot {
                    slot: 1,
                    active: true,
                    last_rotated: Some(t),
                    last_used: None,
                },
                KeySlot {
                    slot: 2,
                    active: true,
                    last_rotated: Some(t),
                    last_used: Some(datetime!(2026-11-20 0:00 UTC)),
                },
            ],
        };
        let k = |id: &str| ListedKey {
            id: id.into(),
            active: true,
            created: t,
        };
        // Same second, only slot 1 dormant: cannot tell which key it is.
        let p = pair_slots(&row, &[1], &[k("AKIA1"), k("AKIA2")]);
        assert!(matches!(&p[0].1, Pairing::NeedsLastUsed { candidates } if candidates.len() == 2));
        // Both dormant: both keys, safely.
        let p = pair_slots(&row, &[1, 2], &[k("AKIA1"), k("AKIA2")]);
        assert!(matches!(&p[0].1, Pairing::AllDormant { keys } if keys.len() == 2));
        // Distinct creation times pair exactly.
        let other = ListedKey {
            id: "AKIA3".into(),
            active: true,
            created: datetime!(2026-01-01 0:00 UTC),
        };
        let p = pair_slots(&row, &[1], &[k("AKIA1"), other]);
        assert_eq!(
            p[0].1,
            Pairing::ByCreation {
                key: "AKIA1".into()
            }
        );
    }

    #[test]
    fn names_with_commas_quotes_and_paths_parse_and_flags_ignore_case() {
        let row = |user: &str, arn: &str| {
            format!(
                "{user},{arn},2024-01-01T00:00:00+00:00,TRUE,N/A,2026-11-01T00:00:00+00:00,N/A,false,True,2024-01-01T00:00:05+00:00,N/A,N/A,N/A,FALSE,N/A,N/A,N/A,N/A,false,N/A,false,N/A"
            )
        };
        let text = format!(
            "{HEADER}\r\n{}\r\n{}\r\n",
            row(
                "\"ops,admin\"",
                "\"arn:aws:iam::111122223333:user/ops,admin\""
            ),
            row(
                "carol",
                "arn:aws-us-gov:iam::111122223333:user/team/a/carol"
            ),
        );
        let rows = parse_credential_report(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].user, "ops,admin");
        assert!(rows[0].password_enabled && rows[0].keys[0].active && !rows[0].keys[1].active);
        assert_eq!(rows[1].user, "carol");
        // Never used since it was set three weeks ago: not dormant, whatever the user's age.
        let now = datetime!(2026-11-23 12:00 UTC);
        assert!(matches!(
            password_dormancy(&rows[0], now, 90),
            Dormancy::Recent { .. }
        ));
    }

    #[test]
    fn a_row_that_disagrees_with_itself_is_an_error() {
        let bad = format!(
            "{HEADER}\nalice,arn:aws:iam::111122223333:user/mallory,2024-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n"
        );
        let e = parse_credential_report(&bad).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("ARN"), "{e}");
        // One cell too many: an unquoted comma in a name.
        let extra = format!(
            "{HEADER}\nops,admin,arn:aws:iam::111122223333:user/ops,admin,2024-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n"
        );
        assert!(
            parse_credential_report(&extra)
                .unwrap_err()
                .to_string()
                .contains("exactly")
        );
        assert!(parse_credential_report(&format!("{HEADER}\n\"open")).is_err());
    }

    #[test]
    fn a_malformed_report_is_an_error() {
        assert!(parse_credential_report("").is_err());
        assert!(
            parse_credential_report("user,arn\nx,y\n")
                .unwrap_err()
                .to_string()
                .contains("user_creation_time")
        );
        let short = format!("{HEADER}\nbob,arn\n");
        assert!(
            parse_credential_report(&short)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }
}
