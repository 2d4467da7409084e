/// Every schema change of the broker's PostgreSQL database, in order, each a list of statements.
/// Migrations are registered by name and never edited once released; new ones are appended.
/// The tables are those of the SQLite store, plus the log's head row: the one row every node
/// locks to append, which holds what appending needs (size, last leaf hash and time, the tree's
/// right edge) so that no node loads the tree to append.
enum PostgresMigrations {
    /// A key of PostgreSQL's advisory locks held while migrating, so that nodes starting together
    /// migrate once, one after the other.
    static let lockKey: Int64 = 0x4369_7669_7461_7301

    static let all: [(name: String, statements: [String])] = [
        ("2026-12-05 broker state", [
            """
            CREATE TABLE participant (
                key_id text PRIMARY KEY, name text NOT NULL, role text NOT NULL,
                ed25519 bytea NOT NULL, x25519 bytea NOT NULL, registered text NOT NULL)
            """,
            """
            CREATE TABLE request_nonce (
                key_id text NOT NULL, nonce text NOT NULL, created bigint NOT NULL, PRIMARY KEY (key_id, nonce))
            """,
            "CREATE INDEX request_nonce_created ON request_nonce (created)",
            """
            CREATE TABLE dataset (
                id text PRIMARY KEY, publisher text NOT NULL REFERENCES participant (key_id), schema bytea NOT NULL,
                schema_sha256 bytea NOT NULL, wrapped_key bytea NOT NULL, purposes text NOT NULL, registered text NOT NULL)
            """,
            """
            CREATE TABLE batch (
                dataset text NOT NULL REFERENCES dataset (id), sequence bigint NOT NULL, records bigint NOT NULL,
                idempotency_key text, content_sha256 bytea NOT NULL, created text NOT NULL,
                PRIMARY KEY (dataset, sequence), UNIQUE (dataset, idempotency_key))
            """,
            """
            CREATE TABLE segment (
                dataset text NOT NULL, sequence bigint NOT NULL, position bigint NOT NULL, sealed bytea NOT NULL,
                PRIMARY KEY (dataset, sequence, position), FOREIGN KEY (dataset, sequence) REFERENCES batch)
            """,
            // Sealed bytes do not compress; kept out of line uncompressed, a part of them is read without the rest.
            "ALTER TABLE segment ALTER COLUMN sealed SET STORAGE EXTERNAL",
            "CREATE TABLE store_meta (name text PRIMARY KEY, value text NOT NULL)",
            "CREATE TABLE store_secret (name text PRIMARY KEY, wrapped bytea NOT NULL)",
            "CREATE TABLE log_entry (position bigint PRIMARY KEY, bytes bytea NOT NULL, leaf bytea NOT NULL)",
            """
            CREATE TABLE log_head (
                only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), size bigint NOT NULL,
                last_leaf bytea NOT NULL, last_time text NOT NULL, frontier bytea NOT NULL)
            """,
            "INSERT INTO log_head (size, last_leaf, last_time, frontier) VALUES (0, decode(repeat('00', 32), 'hex'), '', ''::bytea)",
            "CREATE TABLE log_checkpoint (size bigint PRIMARY KEY, note text NOT NULL, signed text)",
            """
            CREATE TABLE agreement (
                id text PRIMARY KEY, dataset text NOT NULL REFERENCES dataset (id),
                publisher text NOT NULL REFERENCES participant (key_id), partner text NOT NULL REFERENCES participant (key_id),
                policy bytea NOT NULL, policy_sha256 bytea NOT NULL, offer_signature bytea NOT NULL, accept_signature bytea,
                state text NOT NULL, valid_from text NOT NULL, valid_until text NOT NULL, budget_micro bigint NOT NULL,
                spent_micro bigint NOT NULL DEFAULT 0, offered text NOT NULL, accepted text, ended text)
            """,
            "CREATE INDEX agreement_partner ON agreement (partner)",
            """
            CREATE TABLE feed (
                id text PRIMARY KEY, agreement text NOT NULL REFERENCES agreement (id), purpose text NOT NULL,
                next_batch bigint NOT NULL, delivered bigint NOT NULL DEFAULT 0, acknowledged bigint NOT NULL DEFAULT 0,
                webhook text, pushed bigint NOT NULL DEFAULT 0, created text NOT NULL)
            """,
            """
            CREATE TABLE delivery (
                id text PRIMARY KEY, agreement text NOT NULL REFERENCES agreement (id), partner text NOT NULL,
                kind text NOT NULL, feed text REFERENCES feed (id), feed_sequence bigint, log_index bigint NOT NULL,
                records bigint NOT NULL, envelope bytea NOT NULL, created text NOT NULL, UNIQUE (feed, feed_sequence))
            """,
            "ALTER TABLE delivery ALTER COLUMN envelope SET STORAGE EXTERNAL",
            "CREATE INDEX delivery_partner ON delivery (partner)",
            """
            CREATE TABLE drawn_batch (
                partner text NOT NULL, dataset text NOT NULL, sequence bigint NOT NULL,
                delivery text NOT NULL REFERENCES delivery (id), PRIMARY KEY (partner, dataset, sequence))
            """,
            """
            CREATE TABLE request_key (
                partner text NOT NULL, key text NOT NULL, request_sha256 bytea NOT NULL,
                delivery text NOT NULL REFERENCES delivery (id), figures bytea NOT NULL, created text NOT NULL,
                PRIMARY KEY (partner, key))
            """,
            """
            CREATE TABLE consent_event (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, dataset text NOT NULL REFERENCES dataset (id),
                subject bytea NOT NULL, purpose text NOT NULL, granted boolean NOT NULL, record bytea NOT NULL,
                recorded text NOT NULL)
            """,
            "CREATE INDEX consent_event_by_purpose ON consent_event (dataset, purpose, id)",
            // Who holds each piece of scheduled work (a feed's window, its webhook pushes) until when, on the database's clock.
            "CREATE TABLE work_lease (name text PRIMARY KEY, holder text NOT NULL, until timestamptz NOT NULL)",
        ]),
        ("2026-12-05 participant keys", [
            // Keys a participant rotated to (pending until approved) or away from (accepted until `retires`).
            """
            CREATE TABLE participant_key (
                key_id text PRIMARY KEY, participant text NOT NULL REFERENCES participant (key_id), name text NOT NULL,
                ed25519 bytea NOT NULL, x25519 bytea NOT NULL, requested text NOT NULL, approved text, retires text)
            """,
            "CREATE INDEX participant_key_by_participant ON participant_key (participant)",
        ]),
        ("2026-12-05 resumable uploads and web sessions", [
            // The SHA-256 of each upload's bytes as received, so that the same upload sent again is answered without reading it.
            "ALTER TABLE batch ADD COLUMN body_sha256 bytea",
            // Each consent event names the entry its request made, and a recorder's idempotency keys
            // name that entry, so that a request sent again is answered with its first receipts.
            "ALTER TABLE consent_event ADD COLUMN log_index bigint",
            "CREATE INDEX consent_event_by_entry ON consent_event (log_index)",
            """
            CREATE TABLE consent_key (
                recorder text NOT NULL, key text NOT NULL, request_sha256 bytea NOT NULL, log_index bigint NOT NULL,
                created text NOT NULL, PRIMARY KEY (recorder, key))
            """,
            // How often requests under each agreement were refused, by reason (refusals change nothing else).
            "CREATE TABLE refusal (agreement text NOT NULL, code text NOT NULL, count bigint NOT NULL, last text NOT NULL, PRIMARY KEY (agreement, code))",
            // One-time login links and web sessions, by the SHA-256 of their token.
            """
            CREATE TABLE web_token (
                sha256 bytea PRIMARY KEY, kind text NOT NULL, participant text NOT NULL, created text NOT NULL,
                expires text NOT NULL, ended text)
            """,
        ]),
        ("2026-12-05 synthetic data and dataset quality", [
            // Per dataset, the counts its data-quality figures are computed from (the broker's encoding).
            "CREATE TABLE dataset_quality (dataset text PRIMARY KEY REFERENCES dataset (id), counts bytea NOT NULL)",
        ]),
    ]

    /// Applies the migrations not applied yet, in one transaction under the migration lock;
    /// returns the names of all applied, in order.
    @discardableResult
    static func migrate(_ session: PostgresSession) throws -> [String] {
        try session.inTransaction {
            try session.rows("SELECT pg_advisory_xact_lock($1)", [.integer(lockKey)])
            try session.execute("CREATE TABLE IF NOT EXISTS schema_migration (name text PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
            let applied = Set(try session.rows("SELECT name FROM schema_migration").map { try $0.text("name") })
            for migration in all where !applied.contains(migration.name) {
                for statement in migration.statements { try session.execute(statement) }
                try session.execute("INSERT INTO schema_migration (name) VALUES ($1)", [.text(migration.name)])
            }
            return try session.rows("SELECT name FROM schema_migration ORDER BY name").map { try $0.text("name") }
        }
    }
}
