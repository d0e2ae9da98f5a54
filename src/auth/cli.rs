//! The `user` and `token` subcommands of `packs-registry`: hash a password, make a
//! root key, mint a token from the root key, attenuate one offline, verify one.
//! Tokens go to standard output alone on their line; `-` as `--token` reads the token
//! from standard input (keeps it out of the process list and shell history).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use super::grant::{Actions, Grant, Need, RepoPattern, Scope};
use super::token::{Attenuation, Tokens, attenuate, generate_key};
use super::{AuthError, hash_password};
use crate::config::Config;

/// `packs-registry user …`
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Print the Argon2id hash of a password, for `password_hash`.
    ///
    /// The password is read from the terminal without echo (twice), or as one line of
    /// standard input when that is not a terminal.
    Hash,
}

/// `packs-registry token …`
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new root key and its public key.
    ///
    /// The first line is the root key (for `auth.root_key_file` or
    /// `PACKS__AUTH__ROOT_KEY`), the second, as a comment, its public key (for other
    /// registries' `auth.trusted_keys`). The output is itself a valid key file.
    Keygen,
    /// Mint a token with the root key.
    ///
    /// The key comes from the configuration: the file and the `PACKS__` environment
    /// (e.g. `PACKS__AUTH__ROOT_KEY`).
    Mint(MintArgs),
    /// Narrow a token offline, without any key.
    ///
    /// Fewer repositories, fewer actions, an earlier expiry: the result can never do
    /// more than the token given.
    Attenuate(AttenuateArgs),
    /// Check whether a token allows the given scopes.
    ///
    /// Checked as the registry would; exits non-zero with the reason if not.
    Verify(VerifyArgs),
}

/// `token mint`
#[derive(clap::Args)]
pub struct MintArgs {
    /// Configuration file (TOML) holding the `[auth]` root key settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The principal the token names (audit logs show it).
    #[arg(long)]
    pub principal: String,
    /// A grant, `<repository pattern>:<actions>` (`packs/:pull`, `packs/x:pull,push`,
    /// `*:*`) or `registry:catalog:*`; repeat for several.
    #[arg(long = "grant", value_parser = Grant::parse)]
    pub grants: Vec<Grant>,
    /// Lifetime, e.g. `30d`, `12h`, `90min`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Duration,
}

/// `token attenuate`
#[derive(clap::Args)]
pub struct AttenuateArgs {
    /// The token to narrow (`-`: read it from standard input).
    #[arg(long)]
    pub token: String,
    /// Keep only this repository or prefix (`packs/a`, `packs/team/`); repeat for
    /// several. Without it, `--actions` applies to every repository the token covers.
    #[arg(long = "repository", value_parser = RepoPattern::parse)]
    pub repositories: Vec<RepoPattern>,
    /// Keep only these actions (`pull`, `pull,push`).
    #[arg(long, value_parser = Actions::parse)]
    pub actions: Option<Actions>,
    /// Keep the catalog listing (dropped whenever repositories or actions are
    /// narrowed, unless this is given).
    #[arg(long)]
    pub catalog: bool,
    /// Expire after this long from now (only if earlier than the token's expiry).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
}

/// `token verify`
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Configuration file (TOML) holding the `[auth]` key settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The token (`-`: read it from standard input).
    #[arg(long)]
    pub token: String,
    /// A scope the token must allow, `repository:<name>:<actions>` or
    /// `registry:catalog:*`; repeat for several. None: only validity is checked.
    #[arg(long = "scope", value_parser = Scope::parse)]
    pub scopes: Vec<Scope>,
}

/// Runs a `user` subcommand.
pub fn run_user(command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Hash => {
            let password = read_password()?;
            let hash = hash_password(password.expose_secret()).map_err(|e| e.to_string())?;
            println!("{hash}");
            Ok(())
        }
    }
}

/// Runs a `token` subcommand.
pub fn run_token(command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Keygen => {
            let (private, public) = generate_key();
            println!("{}", private.expose_secret());
            println!("# public key: {public}");
            Ok(())
        }
        TokenCommand::Mint(args) => {
            let tokens = tokens_from(args.config)?;
            let expires = SystemTime::now() + args.expires;
            let token = tokens
                .mint(&args.principal, &args.grants, expires)
                .map_err(|e| e.to_string())?;
            println!("{}", token.expose_secret());
            Ok(())
        }
        TokenCommand::Attenuate(args) => {
            let token = token_arg(&args.token)?;
            let narrower = attenuation(&args)?;
            let child = attenuate(token.expose_secret(), &narrower).map_err(|e| e.to_string())?;
            println!("{}", child.expose_secret());
            Ok(())
        }
        TokenCommand::Verify(args) => {
            let tokens = tokens_from(args.config)?;
            let token = token_arg(&args.token)?;
            let needs: Vec<Need<'_>> = args.scopes.iter().flat_map(Scope::needs).collect();
            let (principal, _) = tokens
                .verify(token.expose_secret(), &needs)
                .map_err(|e: AuthError| format!("refused: {e}"))?;
            println!("allowed: principal {principal}");
            Ok(())
        }
    }
}

fn attenuation(args: &AttenuateArgs) -> Result<Attenuation, String> {
    let actions = args.actions.unwrap_or(Actions::ALL);
    if args.actions.is_some_and(Actions::is_empty) {
        return Err("--actions names no action".into());
    }
    let mut grants: Vec<Grant> = if !args.repositories.is_empty() {
        args.repositories
            .iter()
            .map(|p| Grant::Repository {
                pattern: p.clone(),
                actions,
            })
            .collect()
    } else if args.actions.is_some() {
        vec![Grant::Repository {
            pattern: RepoPattern::Any,
            actions,
        }]
    } else {
        Vec::new()
    };
    let narrows = !grants.is_empty() || args.catalog;
    if args.catalog {
        grants.push(Grant::Catalog);
    }
    if !narrows && args.expires.is_none() {
        return Err(
            "nothing to narrow: give --repository, --actions, --catalog or --expires".into(),
        );
    }
    Ok(Attenuation {
        grants: narrows.then_some(grants),
        expires: args.expires.map(|d| SystemTime::now() + d),
    })
}

fn tokens_from(config: Option<PathBuf>) -> Result<Tokens, String> {
    let config = Config::load(config.as_deref()).map_err(|e| e.to_string())?;
    Tokens::from_config(&config.auth).map_err(|e| e.to_string())
}

/// The token argument, or a line of standard input for `-`.
fn token_arg(arg: &str) -> Result<SecretString, String> {
    if arg != "-" {
        return Ok(SecretString::from(arg.to_owned()));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the token from standard input: {e}"))?;
    Ok(SecretString::from(line.trim().to_owned()))
}

fn read_password() -> Result<SecretString, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = SecretString::from(
            rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?,
        );
        let again = SecretString::from(
            rpassword::prompt_password("Password (again): ").map_err(|e| e.to_string())?,
        );
        if first.expose_secret() != again.expose_secret() {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        SecretString::from(line)
    };
    if password.expose_secret().is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}
