/// ε-differential privacy for an integer-valued query of sensitivity Δ:
/// adds discrete Laplace noise of scale Δ/ε. Parameters are checked when the
/// mechanism is built, not when it runs.
public struct DiscreteLaplaceMechanism: Sendable {
    /// ε as a rational, e.g. `Rational(decimal: "0.5")`.
    public let epsilon: Rational
    /// The most one individual's data can change the query's integer result.
    public let sensitivity: UInt64
    /// The noise scale Δ/ε.
    public let scale: Rational

    public init(epsilon: Rational, sensitivity: UInt64) throws {
        guard !epsilon.isZero else { throw PrivacyError(.invalidParameter, "ε must be positive") }
        guard sensitivity > 0 else { throw PrivacyError(.invalidParameter, "sensitivity must be at least 1") }
        guard epsilon.numerator < 1 << 40, epsilon.denominator < 1 << 40, sensitivity < 1 << 40 else {
            throw PrivacyError(.invalidParameter, "ε = \(epsilon) or sensitivity \(sensitivity) is outside the supported range (terms below 2^40)")
        }
        self.epsilon = epsilon
        self.sensitivity = sensitivity
        self.scale = try Rational(UInt128(sensitivity) * epsilon.denominator, epsilon.numerator)
    }

    /// The true value plus noise.
    public func release<R: RandomWords>(_ value: Int64, using sampler: inout ExactSampler<R>) -> Int64 {
        value.addingReportingOverflow(sampler.discreteLaplace(scale: scale)).partialValue
    }
}

/// ρ-zero-concentrated differential privacy for an integer-valued query of
/// sensitivity Δ: adds discrete Gaussian noise with σ² = Δ² / (2ρ) (CKS20, Theorem 14).
public struct DiscreteGaussianMechanism: Sendable {
    public let rho: Rational
    public let sensitivity: UInt64
    /// σ² = Δ² / (2ρ).
    public let sigmaSquared: Rational

    public init(rho: Rational, sensitivity: UInt64) throws {
        guard !rho.isZero else { throw PrivacyError(.invalidParameter, "ρ must be positive") }
        guard sensitivity > 0 else { throw PrivacyError(.invalidParameter, "sensitivity must be at least 1") }
        let s = UInt128(sensitivity)
        let sigma = try Rational(s * s * rho.denominator, 2 * rho.numerator)
        guard sigma.numerator < 1 << 40, sigma.denominator < 1 << 40 else {
            throw PrivacyError(.invalidParameter, "σ² = \(sigma) is outside the supported range (numerator and denominator below 2^40); choose a simpler ρ")
        }
        self.rho = rho
        self.sensitivity = sensitivity
        self.sigmaSquared = sigma
    }

    public func release<R: RandomWords>(_ value: Int64, using sampler: inout ExactSampler<R>) -> Int64 {
        value.addingReportingOverflow(sampler.discreteGaussian(sigmaSquared: sigmaSquared)).partialValue
    }
}
