//! Man pages generated from a clap command (clap_mangen): one page for the command and one per
//! visible subcommand (`NAME-SUB.SECTION`), written into one directory. Used by the hidden
//! `man DIR` subcommands of lockstepd and lockstep-conformance; touches nothing but DIR.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot create the man page directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("cannot write the man page {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes the pages of `command` and of its visible subcommands (recursively) into `dir`, in
/// man `section` ("1" or "8"), and returns their paths, the command's own page first.
pub fn write_all(command: clap::Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    std::fs::create_dir_all(dir).map_err(|source| ManError::Directory { path: dir.to_path_buf(), source })?;
    // Built once, so that subcommands get their display names ("lockstepd-config").
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_tree(&command, section, dir, &mut written)?;
    Ok(written)
}

fn write_tree(command: &clap::Command, section: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), ManError> {
    let page = clap_mangen::Man::new(command.clone()).section(section).manual("Lockstep");
    let path = dir.join(page.get_filename());
    let mut text = Vec::new();
    page.render(&mut text).map_err(|source| ManError::Write { path: path.clone(), source })?;
    std::fs::write(&path, text).map_err(|source| ManError::Write { path: path.clone(), source })?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, section, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command_named_after_it() {
        let command = clap::Command::new("tool")
            .about("A tool")
            .subcommand(clap::Command::new("go").about("Goes"))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(command, "8", dir.path()).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool.8", "tool-go.8"]);
        let page = std::fs::read_to_string(dir.path().join("tool-go.8")).unwrap();
        assert!(page.contains(".TH tool-go 8"), "{page}");
        assert!(page.contains("Goes"), "{page}");
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = write_all(clap::Command::new("tool"), "1", &file.path().join("sub")).unwrap_err();
        assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
    }
}
