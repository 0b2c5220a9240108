//! The one rule for the paths of a version's files, beyond the spec's pattern (which the
//! router and the generated types check): no segment longer than a file name may be
//! (255 bytes), and no file that is also a folder of another file of the same version,
//! since no directory could hold both. It is checked when an upload is prepared and when
//! a run's artifact is collected, so a version that no run could mount never exists.

use std::collections::HashSet;

/// The longest segment of a path, in bytes: the longest file name Linux allows.
pub(crate) const MAX_SEGMENT: usize = 255;

/// Why the file at `index` breaks the rule.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathError {
    pub(crate) index: usize,
    pub(crate) message: String,
}

/// Checks the paths of one version's files, in order.
pub(crate) fn check<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), PathError> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let all: HashSet<&str> = paths.iter().copied().collect();
    for (index, path) in paths.iter().enumerate() {
        if let Some(segment) = path.split('/').find(|s| s.len() > MAX_SEGMENT) {
            let message = format!(
                "{path} has a segment of {} bytes; at most {MAX_SEGMENT} are allowed",
                segment.len()
            );
            return Err(PathError { index, message });
        }
        for (at, _) in path.match_indices('/') {
            if all.contains(&path[..at]) {
                return Err(PathError {
                    index,
                    message: format!(
                        "{path} is inside {}, which is a file of the same version",
                        &path[..at]
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_cannot_also_be_a_folder() {
        assert_eq!(check(["a", "a/b"]).unwrap_err().index, 1);
        assert_eq!(check(["x/y/z", "x/y"]).unwrap_err().index, 0);
        assert!(check(["a-b", "a/b", "a.b/c", "ab/c"]).is_ok());
    }

    #[test]
    fn segments_are_at_most_255_bytes() {
        let long = "é".repeat(128); // 256 bytes in 128 characters
        assert_eq!(check(["ok", &format!("dir/{long}")]).unwrap_err().index, 1);
        assert!(
            check(["a".repeat(255).as_str(), format!("{}/b", "c".repeat(255)).as_str()]).is_ok()
        );
    }
}
