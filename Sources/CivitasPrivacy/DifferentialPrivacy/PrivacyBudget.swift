import Foundation

/// What one release costs: ε (pure DP, basic composition) and ρ (zero-concentrated
/// DP), both in millionths so that sums are exact.
public struct PrivacyCharge: Sendable, Equatable {
    public var epsilonMicro: UInt64
    public var rhoMicro: UInt64

    public init(epsilonMicro: UInt64 = 0, rhoMicro: UInt64 = 0) {
        self.epsilonMicro = epsilonMicro
        self.rhoMicro = rhoMicro
    }

    /// The charge of a discrete Laplace mechanism at ε.
    public init(_ mechanism: DiscreteLaplaceMechanism) throws {
        self.init(epsilonMicro: try Self.micro(mechanism.epsilon), rhoMicro: 0)
    }

    /// The charge of a discrete Gaussian mechanism at ρ.
    public init(_ mechanism: DiscreteGaussianMechanism) throws {
        self.init(epsilonMicro: 0, rhoMicro: try Self.micro(mechanism.rho))
    }

    /// A rational in millionths, rounded up so the accountant never under-charges.
    static func micro(_ value: Rational) throws -> UInt64 {
        guard let scaled = checkedMultiply(value.numerator, 1_000_000) else {
            throw PrivacyError(.invalidParameter, "privacy parameter \(value) is too large")
        }
        let (quotient, remainder) = scaled.quotientAndRemainder(dividingBy: value.denominator)
        let rounded = quotient + (remainder > 0 ? 1 : 0)
        guard rounded <= UInt128(UInt64.max) else { throw PrivacyError(.invalidParameter, "privacy parameter \(value) is too large") }
        return UInt64(rounded)
    }
}

/// An agreement's privacy budget and what has been spent: pure ε composes by
/// addition; ρ-zCDP composes by addition and converts to (ε, δ)-DP for reporting.
/// A charge that would exceed either budget is refused and charges nothing.
public struct PrivacyBudget: Sendable, Equatable {
    public let epsilonBudgetMicro: UInt64
    public let rhoBudgetMicro: UInt64
    public private(set) var spent = PrivacyCharge()

    public init(epsilonBudgetMicro: UInt64, rhoBudgetMicro: UInt64 = 0, spent: PrivacyCharge = PrivacyCharge()) {
        self.epsilonBudgetMicro = epsilonBudgetMicro
        self.rhoBudgetMicro = rhoBudgetMicro
        self.spent = spent
    }

    /// What is left (nothing, never less, if more was spent than the budget allows).
    public var remaining: PrivacyCharge {
        PrivacyCharge(epsilonMicro: epsilonBudgetMicro - min(spent.epsilonMicro, epsilonBudgetMicro),
                      rhoMicro: rhoBudgetMicro - min(spent.rhoMicro, rhoBudgetMicro))
    }

    /// Adds `charge` to what is spent, or throws ``PrivacyError/Code/budgetExceeded`` and changes nothing.
    public mutating func charge(_ charge: PrivacyCharge) throws {
        let (epsilon, epsilonOverflow) = spent.epsilonMicro.addingReportingOverflow(charge.epsilonMicro)
        let (rho, rhoOverflow) = spent.rhoMicro.addingReportingOverflow(charge.rhoMicro)
        guard !epsilonOverflow, epsilon <= epsilonBudgetMicro else {
            throw PrivacyError(.budgetExceeded, "ε \(Self.decimal(charge.epsilonMicro)) requested, \(Self.decimal(remaining.epsilonMicro)) of \(Self.decimal(epsilonBudgetMicro)) left")
        }
        guard !rhoOverflow, rho <= rhoBudgetMicro else {
            throw PrivacyError(.budgetExceeded, "ρ \(Self.decimal(charge.rhoMicro)) requested, \(Self.decimal(remaining.rhoMicro)) of \(Self.decimal(rhoBudgetMicro)) left")
        }
        spent = PrivacyCharge(epsilonMicro: epsilon, rhoMicro: rho)
    }

    /// The (ε, δ)-DP guarantee of the ρ spent so far: ε = ρ + 2√(ρ ln(1/δ))
    /// (Bun and Steinke 2016, Proposition 1.3). For reporting only; no sampler uses it.
    public func approximateEpsilon(rhoMicro: UInt64? = nil, delta: Double) -> Double {
        let rho = Double(rhoMicro ?? spent.rhoMicro) / 1_000_000
        guard rho > 0 else { return 0 }
        return rho + 2 * (rho * log(1 / delta)).squareRoot()
    }

    static func decimal(_ micro: UInt64) -> String {
        let whole = micro / 1_000_000, fraction = micro % 1_000_000
        guard fraction > 0 else { return String(whole) }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 6 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }
}
