//! Passwords: Argon2id hashes in PHC strings, hashed and verified on the blocking pool so a
//! login never stalls the async workers.

use std::fmt;
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::config::PasswordHashing;
use crate::error::{AuthError, Result};
use easel_runtime::error::InternalContext;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted, in bytes (hashing cost does not depend on it, but requests
/// stay small).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password as received; its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    /// Checks the rules for a new password.
    pub fn validate_new(&self, field: &'static str) -> Result<()> {
        if self.0.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AuthError::field(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if self.0.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::field(
                field,
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Hashes and verifies passwords with the configured cost.
#[derive(Clone)]
pub struct PasswordHasherPool {
    argon2: Arc<Argon2<'static>>,
    /// A hash of a random password, verified when the email is unknown so that an unknown
    /// email takes as long as a wrong password.
    decoy: Arc<String>,
}

impl fmt::Debug for PasswordHasherPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasherPool").finish_non_exhaustive()
    }
}

impl PasswordHasherPool {
    /// A hasher with these parameters.
    pub fn new(settings: PasswordHashing) -> Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .internal("argon2 parameters")?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut decoy = [0_u8; 24];
        rand::fill(&mut decoy[..]);
        let decoy = argon2.hash_password(&decoy).internal("argon2")?.to_string();
        Ok(PasswordHasherPool {
            argon2: Arc::new(argon2),
            decoy: Arc::new(decoy),
        })
    }

    /// The PHC string of a new password.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .internal("argon2")
        })
        .await
        .internal("the hashing task")??;
        Ok(hashed)
    }

    /// Whether `password` matches `hash`; with no hash (unknown email, no password set) it
    /// spends the same time on a decoy and answers false.
    pub async fn verify(&self, password: &Password, hash: Option<&str>) -> Result<bool> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let (hash, real) = match hash {
            Some(hash) => (hash.to_string(), true),
            None => (self.decoy.as_ref().clone(), false),
        };
        let matched = tokio::task::spawn_blocking(move || {
            argon2
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .internal("the hashing task")?;
        Ok(matched && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify_only_the_right_password() {
        let pool = PasswordHasherPool::new(PasswordHashing::fast_for_tests()).unwrap();
        let password = Password::new("correct horse battery staple");
        let hash = pool.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(pool.verify(&password, Some(&hash)).await.unwrap());
        assert!(
            !pool
                .verify(&Password::new("wrong horse battery staple"), Some(&hash))
                .await
                .unwrap()
        );
        assert!(!pool.verify(&password, None).await.unwrap());
        assert!(!pool.verify(&password, Some("garbage")).await.unwrap());
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn new_passwords_have_rules() {
        assert!(Password::new("short").validate_new("password").is_err());
        assert!(
            Password::new("x".repeat(2000))
                .validate_new("password")
                .is_err()
        );
        assert!(
            Password::new("twelve chars")
                .validate_new("password")
                .is_ok()
        );
    }
}
