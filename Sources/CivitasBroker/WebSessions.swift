import CivitasCrypto
import CivitasStore
import CivitasTime

/// Read-only web sessions: a participant's signed request makes a one-time login link; the link,
/// used once within its lifetime, opens a session for that participant. Only the SHA-256 of each
/// token is stored.
extension Broker {
    /// How long a login link may be used.
    public static let webLoginLifetime: Int64 = 300
    /// How long a session lasts.
    public static let webSessionLifetime: Int64 = 8 * 3600

    /// A new login link's token for `participant`, valid for ``webLoginLifetime`` seconds.
    public func startWebLogin(for participant: Participant, now: UTCTime) throws -> (token: String, expires: UTCTime) {
        let token = Self.newWebToken()
        let expires = UTCTime(secondsSince1970: now.secondsSince1970 + Self.webLoginLifetime)
        try change { transaction in
            // Links and sessions that expired a day ago or more are of no use to anyone: they go.
            try transaction.deleteWebTokens(expiredBefore: UTCTime(secondsSince1970: now.secondsSince1970 - 86_400))
            try transaction.insertWebToken(WebToken(sha256: SHA256Hasher.hash(Array(token.utf8)), kind: .login, participant: participant.keys.keyID,
                                                    created: now, expires: expires))
        }
        return (token, expires)
    }

    /// Whom a login link would sign in, and until when it may be used, without using it (nil
    /// when it was used, expired or never existed).
    public func webLogin(_ token: String, now: UTCTime) throws -> (participant: Participant, expires: UTCTime)? {
        try openToken(token, kind: .login, now: now)
    }

    /// Uses a login link: once, before it expires. Returns the new session's token and its participant.
    public func redeemWebLogin(_ token: String, now: UTCTime) throws -> (session: String, participant: Participant, expires: UTCTime) {
        let refused = BrokerError(.unauthorized, "this login link is not valid: it was used already, it expired, or it never existed; ask for another with civitas web login")
        guard let (participant, _) = try openToken(token, kind: .login, now: now) else { throw refused }
        let session = Self.newWebToken()
        let expires = UTCTime(secondsSince1970: now.secondsSince1970 + Self.webSessionLifetime)
        try change { transaction in
            guard try transaction.endWebToken(sha256: SHA256Hasher.hash(Array(token.utf8)), at: now) else { throw refused }
            try transaction.insertWebToken(WebToken(sha256: SHA256Hasher.hash(Array(session.utf8)), kind: .session, participant: participant.keys.keyID,
                                                    created: now, expires: expires))
        }
        return (session, participant, expires)
    }

    /// The participant of a session that has neither expired nor ended, and when it expires, if `token` is one.
    public func webSession(_ token: String, now: UTCTime) throws -> (participant: Participant, expires: UTCTime)? {
        try openToken(token, kind: .session, now: now)
    }

    /// A token of `kind` that has neither ended nor expired: its participant and expiry.
    private func openToken(_ token: String, kind: WebToken.Kind, now: UTCTime) throws -> (participant: Participant, expires: UTCTime)? {
        guard Self.isWebToken(token), let stored = try mapStore({ try store.webToken(sha256: SHA256Hasher.hash(Array(token.utf8))) }),
              stored.kind == kind, stored.ended == nil, now < stored.expires,
              let participant = try mapStore({ try store.participant(stored.participant) }) else { return nil }
        return (participant, stored.expires)
    }

    /// Ends a session (signing out); a token that is not an open session is left alone.
    public func endWebSession(_ token: String, now: UTCTime) throws {
        guard Self.isWebToken(token), let session = try mapStore({ try store.webToken(sha256: SHA256Hasher.hash(Array(token.utf8))) }),
              session.kind == .session else { return }
        _ = try change { transaction in try transaction.endWebToken(sha256: session.sha256, at: now) }
    }

    /// 32 random bytes, base64url without padding (43 characters).
    static func newWebToken() -> String {
        Base64.encode(Sodium.randomBytes(32)).replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Whether `token` has the form of one (checked before anything is looked up).
    static func isWebToken(_ token: String) -> Bool {
        token.utf8.count == 43 && token.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F }
    }
}
