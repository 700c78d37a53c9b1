//! `shardline generate {man,completions} DIR` (hidden): the man pages and shell completions
//! the Debian package ships, generated from the same clap definition the binary parses with,
//! so they cannot drift from the flags.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use clap_complete::Shell;

/// What to generate, and where.
#[derive(Args)]
pub struct GenerateArgs {
    /// `man`: one roff page per command (`shardline.1`, `shardline-daemon.1`, ...);
    /// `completions`: bash, zsh and fish completion scripts.
    what: What,
    /// Directory to write into (created if missing).
    dir: PathBuf,
}

/// The kinds of file `generate` writes.
#[derive(Clone, Copy, ValueEnum)]
enum What {
    Man,
    Completions,
}

/// The shells completions are generated for, with the file name each one's loader looks for.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "shardline"),
    (Shell::Zsh, "_shardline"),
    (Shell::Fish, "shardline.fish"),
];

/// Writes the files for `command` (the binary's whole clap command) and prints their paths.
pub fn run(args: GenerateArgs, command: clap::Command) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let written = match args.what {
        What::Man => man(command, &args.dir)?,
        What::Completions => completions(command, &args.dir)?,
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// `shardline.1` and one `shardline-SUB.1` per visible subcommand.
fn man(mut command: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    command.build();
    let mut pages = vec![("shardline".to_owned(), command.clone())];
    // clap's own `help` subcommand gets no page of its own.
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("shardline-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name)));
    }
    let mut written = Vec::new();
    for (name, page) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut roff)
            .with_context(|| format!("rendering the man page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// One completion script per shell in [`SHELLS`].
fn completions(mut command: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, file) in SHELLS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "shardline", &mut script);
        let path = dir.join(file);
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
