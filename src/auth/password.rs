//! Password hashes: Argon2id PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`), as
//! `packs-registry user hash` prints them. Verification recomputes the hash with the
//! stored parameters and compares the outputs in constant time (the `phc` crate's
//! `Output` equality); a login that names no known user is checked against
//! [`DUMMY_HASH`], made with the same parameters, so it costs what a wrong password
//! costs.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

/// An Argon2id hash with the default parameters of [`hash_password`] of a random
/// password nobody knows: what an unknown user's login is verified against, so that it
/// takes as long as a known user's failed login. (`dummy_hash_costs_what_a_real_one_costs`
/// checks its parameters against a fresh hash.)
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$IUqu7evZxy83E77BEBQyEA$nuZsr/mz+SmaNKoJ/QAAAAUNSbJ0QQPXLhJ4oLLeNlY";

/// Hashes `password` with Argon2id, the default parameters (19 MiB, 2 passes, 1 lane)
/// and a random salt, into a PHC string.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. An unparsable hash or an
/// algorithm other than Argon2 never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks that `hash` is an Argon2 PHC string this module can verify (for
/// configuration checks: a user whose hash cannot be verified could never log in).
pub fn check_hash(hash: &str) -> Result<(), PasswordError> {
    let parsed = PasswordHash::new(hash).map_err(|e| PasswordError(e.to_string()))?;
    if !matches!(
        parsed.algorithm.as_str(),
        "argon2id" | "argon2i" | "argon2d"
    ) {
        return Err(PasswordError(format!(
            "{} is not an Argon2 hash (make one with `packs-registry user hash`)",
            parsed.algorithm
        )));
    }
    argon2::Params::try_from(&parsed).map_err(|e| PasswordError(e.to_string()))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError("the hash has no salt or no output".into()));
    }
    Ok(())
}

/// A password could not be hashed, or a stored hash is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hash: {0}")]
pub struct PasswordError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "salts are random");
        assert!(verify_password("correct horse", &a));
        assert!(verify_password("correct horse", &b));
        assert!(!verify_password("correct horse ", &a));
        assert!(!verify_password("", &a));
        assert!(!verify_password("correct horse", "not a hash"));
        check_hash(&a).unwrap();
    }

    #[test]
    fn refuses_hashes_it_cannot_verify() {
        assert!(check_hash("").is_err());
        assert!(check_hash("plaintext").is_err());
        assert!(check_hash("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
        assert!(check_hash("$argon2id$v=19$m=19456,t=2,p=1").is_err());
    }

    #[test]
    fn dummy_hash_costs_what_a_real_one_costs() {
        check_hash(DUMMY_HASH).unwrap();
        let real = hash_password("x").unwrap();
        let params = |h: &str| {
            let p = PasswordHash::new(h).unwrap();
            (p.algorithm.to_string(), p.version, p.params.to_string())
        };
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(!verify_password("", DUMMY_HASH));
    }
}
