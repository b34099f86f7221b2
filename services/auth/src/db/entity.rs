//! The auth service's tables: `auth_users`, `auth_api_keys`, `auth_usage` and
//! `auth_signing_keys`. Times are Unix milliseconds, compared the same way on PostgreSQL and
//! SQLite.

/// The `auth_users` table.
pub mod user {
    use sea_orm::entity::prelude::*;

    /// One user.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_users")]
    pub struct Model {
        /// `usr_…`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Lowercased email, unique.
        pub email: String,
        /// Argon2id PHC string; `None` when the user cannot log in with a password.
        pub password_hash: Option<String>,
        /// `easel.account.v1.Tier` as a number.
        pub tier: i32,
        /// `easel.account.v1.Role` as a number.
        pub role: i32,
        /// A disabled user cannot authenticate.
        pub disabled: bool,
        /// When created.
        pub created_at_ms: i64,
        /// Last change.
        pub updated_at_ms: i64,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("User")
                .field("id", &self.id)
                .field("tier", &self.tier)
                .field("role", &self.role)
                .field("disabled", &self.disabled)
                .finish_non_exhaustive()
        }
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `auth_api_keys` table.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    /// One API key; only the hash of its secret (which `Debug` leaves out too).
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_api_keys")]
    pub struct Model {
        /// `key_…`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The owning user's id.
        pub owner: String,
        /// A name for people.
        pub name: String,
        /// The public prefix, unique.
        pub prefix: String,
        /// Hex SHA-256 of the secret.
        pub secret_hash: String,
        /// Scopes as a JSON array of strings.
        pub scopes: String,
        /// When created.
        pub created_at_ms: i64,
        /// When last used (updated at most once a minute).
        pub last_used_at_ms: Option<i64>,
        /// When it stops working.
        pub expires_at_ms: Option<i64>,
        /// When revoked.
        pub revoked_at_ms: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ApiKey")
                .field("id", &self.id)
                .field("owner", &self.owner)
                .field("prefix", &self.prefix)
                .field("expires_at_ms", &self.expires_at_ms)
                .field("revoked_at_ms", &self.revoked_at_ms)
                .finish_non_exhaustive()
        }
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `auth_usage` table: one row per user and UTC day.
pub mod usage {
    use sea_orm::entity::prelude::*;

    /// A user's usage on one day.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_usage")]
    pub struct Model {
        /// The user's id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// `YYYY-MM-DD` (UTC).
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: String,
        /// Jobs submitted.
        pub jobs_submitted: i64,
        /// GPU seconds used.
        pub gpu_seconds: f64,
        /// Net bytes of artifacts stored that day.
        pub bytes_stored: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `auth_signing_keys` table: the Ed25519 keys that sign access tokens.
pub mod signing_key {
    use sea_orm::entity::prelude::*;

    /// One signing key.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_signing_keys")]
    pub struct Model {
        /// The key id (`kid`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        /// The PKCS#8 document, standard base64.
        pub private_key: String,
        /// The raw 32-byte public key, unpadded base64url (the JWK's `x`).
        pub public_key: String,
        /// When created; the newest unretired key signs.
        pub created_at_ms: i64,
        /// When a newer key replaced it.
        pub retired_at_ms: Option<i64>,
        /// Until when it still verifies (set when retired).
        pub verify_until_ms: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SigningKey")
                .field("kid", &self.kid)
                .field("created_at_ms", &self.created_at_ms)
                .field("retired_at_ms", &self.retired_at_ms)
                .field("verify_until_ms", &self.verify_until_ms)
                .finish_non_exhaustive()
        }
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
