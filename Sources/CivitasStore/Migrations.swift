import GRDB

/// Every schema change of the broker's database, in order. Migrations are registered by name
/// and never edited once released; new ones are appended.
extension BrokerStore {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("2026-11-27 participants") { db in
            try db.create(table: "participant") { t in
                t.primaryKey("key_id", .text)
                t.column("name", .text).notNull()
                t.column("role", .text).notNull()
                t.column("ed25519", .blob).notNull()
                t.column("x25519", .blob).notNull()
                t.column("registered", .text).notNull()
            }
        }
        migrator.registerMigration("2026-11-27 request nonces") { db in
            try db.create(table: "request_nonce") { t in
                t.column("key_id", .text).notNull()
                t.column("nonce", .text).notNull()
                t.column("created", .integer).notNull().indexed()
                t.primaryKey(["key_id", "nonce"])
            }
        }
        migrator.registerMigration("2026-11-27 datasets and batches") { db in
            try db.create(table: "dataset") { t in
                t.primaryKey("id", .text)
                t.column("publisher", .text).notNull().references("participant", column: "key_id")
                t.column("schema", .blob).notNull()
                t.column("schema_sha256", .blob).notNull()
                t.column("wrapped_key", .blob).notNull()
                t.column("registered", .text).notNull()
            }
            try db.create(table: "batch") { t in
                t.column("dataset", .text).notNull().references("dataset", column: "id")
                t.column("sequence", .integer).notNull()
                t.column("records", .integer).notNull()
                t.column("idempotency_key", .text)
                t.column("content_sha256", .blob).notNull()
                t.column("created", .text).notNull()
                t.primaryKey(["dataset", "sequence"])
                t.uniqueKey(["dataset", "idempotency_key"])
            }
            try db.create(table: "segment") { t in
                t.column("dataset", .text).notNull()
                t.column("sequence", .integer).notNull()
                t.column("position", .integer).notNull()
                t.column("sealed", .blob).notNull()
                t.primaryKey(["dataset", "sequence", "position"])
                t.foreignKey(["dataset", "sequence"], references: "batch")
            }
        }
        migrator.registerMigration("2026-11-28 dataset purposes") { db in
            try db.alter(table: "dataset") { t in
                t.add(column: "purposes", .text).notNull().defaults(to: "[]")
            }
        }
        migrator.registerMigration("2026-11-29 exchanges") { db in
            try createExchangeTables(db)
        }
        migrator.registerMigration("2026-12-02 drawn batches") { db in
            // Which batches of a dataset each partner's deliveries drew from: at most once each.
            try db.create(table: "drawn_batch") { t in
                t.column("partner", .text).notNull()
                t.column("dataset", .text).notNull()
                t.column("sequence", .integer).notNull()
                t.column("delivery", .text).notNull().references("delivery", column: "id")
                t.primaryKey(["partner", "dataset", "sequence"])
            }
        }
        migrator.registerMigration("2026-12-04 request keys") { db in
            // A partner's idempotency keys for releases and aggregates: the delivery each one made.
            try db.create(table: "request_key") { t in
                t.column("partner", .text).notNull()
                t.column("key", .text).notNull()
                t.column("request_sha256", .blob).notNull()
                t.column("delivery", .text).notNull().references("delivery", column: "id")
                t.column("figures", .blob).notNull()
                t.column("created", .text).notNull()
                t.primaryKey(["partner", "key"])
            }
        }
        migrator.registerMigration("2026-12-04 consent events") { db in
            // Every consent event is kept (each ISO/IEC TS 27560 record, not only the latest) and
            // appended in order: the (dataset, purpose, id) index grows at its end, where a table
            // keyed by subject hash was written at random pages. A subject's state is its last event.
            try db.create(table: "consent_event") { t in
                t.primaryKey("id", .integer)
                t.column("dataset", .text).notNull().references("dataset", column: "id")
                t.column("subject", .blob).notNull()
                t.column("purpose", .text).notNull()
                t.column("granted", .boolean).notNull()
                t.column("record", .blob).notNull()
                t.column("recorded", .text).notNull()
            }
            try db.create(index: "consent_event_by_purpose", on: "consent_event", columns: ["dataset", "purpose", "id"])
            try db.execute(sql: """
                INSERT INTO consent_event (dataset, subject, purpose, granted, record, recorded)
                SELECT dataset, subject, purpose, granted, record, updated FROM consent ORDER BY updated, rowid
                """)
            try db.drop(table: "consent")
        }
        migrator.registerMigration("2026-12-05 checkpoint times") { db in
            // When each checkpoint was signed (UTC, as SQLite records it), for the checkpoint-age metric; unknown for older ones.
            try db.alter(table: "log_checkpoint") { t in t.add(column: "signed", .text) }
        }
        migrator.registerMigration("2026-12-05 work leases") { db in
            // Who holds each piece of scheduled work (a feed's window, its webhook pushes) until when (Unix seconds).
            try db.create(table: "work_lease") { t in
                t.primaryKey("name", .text)
                t.column("holder", .text).notNull()
                t.column("until", .integer).notNull()
            }
        }
        migrator.registerMigration("2026-12-05 participant keys") { db in
            // Keys a participant rotated to (pending until approved) or away from (accepted until `retires`).
            try db.create(table: "participant_key") { t in
                t.primaryKey("key_id", .text)
                t.column("participant", .text).notNull().references("participant", column: "key_id").indexed()
                t.column("name", .text).notNull()
                t.column("ed25519", .blob).notNull()
                t.column("x25519", .blob).notNull()
                t.column("requested", .text).notNull()
                t.column("approved", .text)
                t.column("retires", .text)
            }
        }
        migrator.registerMigration("2026-12-05 resumable uploads and web sessions") { db in
            // The SHA-256 of each upload's bytes as received, so that the same upload sent again is answered without reading it.
            try db.alter(table: "batch") { t in t.add(column: "body_sha256", .blob) }
            // Each consent event names the entry its request made, and a recorder's idempotency keys
            // name that entry, so that a request sent again is answered with its first receipts.
            try db.alter(table: "consent_event") { t in t.add(column: "log_index", .integer) }
            try db.create(index: "consent_event_by_entry", on: "consent_event", columns: ["log_index"])
            try db.create(table: "consent_key") { t in
                t.column("recorder", .text).notNull()
                t.column("key", .text).notNull()
                t.column("request_sha256", .blob).notNull()
                t.column("log_index", .integer).notNull()
                t.column("created", .text).notNull()
                t.primaryKey(["recorder", "key"])
            }
            // How often requests under each agreement were refused, by reason (refusals change nothing else).
            try db.create(table: "refusal") { t in
                t.column("agreement", .text).notNull()
                t.column("code", .text).notNull()
                t.column("count", .integer).notNull()
                t.column("last", .text).notNull()
                t.primaryKey(["agreement", "code"])
            }
            // One-time login links and web sessions, by the SHA-256 of their token.
            try db.create(table: "web_token") { t in
                t.primaryKey("sha256", .blob)
                t.column("kind", .text).notNull()
                t.column("participant", .text).notNull()
                t.column("created", .text).notNull()
                t.column("expires", .text).notNull()
                t.column("ended", .text)
            }
        }
        migrator.registerMigration("2026-12-05 synthetic data and dataset quality") { db in
            // Per dataset, the counts its data-quality figures are computed from (the broker's encoding).
            try db.create(table: "dataset_quality") { t in
                t.primaryKey("dataset", .text).references("dataset", column: "id")
                t.column("counts", .blob).notNull()
            }
        }
        migrator.registerMigration("2026-12-06 envelopes beside the database") { db in
            // The file (in the envelope folder) of an envelope kept outside the database; NULL when
            // the envelope is the row's BLOB.
            try db.alter(table: "delivery") { t in t.add(column: "envelope_file", .text) }
        }
        migrator.registerMigration("2026-12-06 consent records as differences") { db in
            // A consent record after the first of its log entry may be stored as its differences
            // from that first one (RecordDifferences), which this names; NULL for a whole record.
            try db.alter(table: "consent_event") { t in t.add(column: "record_base", .integer) }
            // Only whole records are indexed by their entry: a request's events are one run of ids
            // (one writer, one transaction), found from its first record to the next entry's.
            try db.execute(sql: "DROP INDEX consent_event_by_entry")
            try db.execute(sql: "CREATE INDEX consent_event_by_entry ON consent_event (log_index) WHERE record_base IS NULL")
        }
        return migrator
    }

    /// The exchange tables (migration "2026-11-29 exchanges"): store metadata and secrets, the
    /// log and its checkpoints, agreements, consent, feeds and deliveries.
    static func createExchangeTables(_ db: Database) throws {
        try db.create(table: "store_meta") { t in
            t.primaryKey("name", .text)
            t.column("value", .text).notNull()
        }
        try db.create(table: "store_secret") { t in
            t.primaryKey("name", .text)
            t.column("wrapped", .blob).notNull()
        }
        try db.create(table: "log_entry") { t in
            t.primaryKey("position", .integer)
            t.column("bytes", .blob).notNull()
            t.column("leaf", .blob).notNull()
        }
        try db.create(table: "log_checkpoint") { t in
            t.primaryKey("size", .integer)
            t.column("note", .text).notNull()
        }
        try db.create(table: "agreement") { t in
            t.primaryKey("id", .text)
            t.column("dataset", .text).notNull().references("dataset", column: "id")
            t.column("publisher", .text).notNull().references("participant", column: "key_id")
            t.column("partner", .text).notNull().references("participant", column: "key_id").indexed()
            t.column("policy", .blob).notNull()
            t.column("policy_sha256", .blob).notNull()
            t.column("offer_signature", .blob).notNull()
            t.column("accept_signature", .blob)
            t.column("state", .text).notNull()
            t.column("valid_from", .text).notNull()
            t.column("valid_until", .text).notNull()
            t.column("budget_micro", .integer).notNull()
            t.column("spent_micro", .integer).notNull().defaults(to: 0)
            t.column("offered", .text).notNull()
            t.column("accepted", .text)
            t.column("ended", .text)
        }
        try db.create(table: "consent") { t in
            t.column("dataset", .text).notNull().references("dataset", column: "id")
            t.column("subject", .blob).notNull()
            t.column("purpose", .text).notNull()
            t.column("granted", .boolean).notNull()
            t.column("record", .blob).notNull()
            t.column("updated", .text).notNull()
            t.primaryKey(["dataset", "subject", "purpose"])
        }
        try db.create(table: "feed") { t in
            t.primaryKey("id", .text)
            t.column("agreement", .text).notNull().references("agreement", column: "id")
            t.column("purpose", .text).notNull()
            t.column("next_batch", .integer).notNull()
            t.column("delivered", .integer).notNull().defaults(to: 0)
            t.column("acknowledged", .integer).notNull().defaults(to: 0)
            t.column("webhook", .text)
            t.column("pushed", .integer).notNull().defaults(to: 0)
            t.column("created", .text).notNull()
        }
        try db.create(table: "delivery") { t in
            t.primaryKey("id", .text)
            t.column("agreement", .text).notNull().references("agreement", column: "id")
            t.column("partner", .text).notNull().indexed()
            t.column("kind", .text).notNull()
            t.column("feed", .text).references("feed", column: "id")
            t.column("feed_sequence", .integer)
            t.column("log_index", .integer).notNull()
            t.column("records", .integer).notNull()
            t.column("envelope", .blob).notNull()
            t.column("created", .text).notNull()
            t.uniqueKey(["feed", "feed_sequence"])
        }
    }
}
