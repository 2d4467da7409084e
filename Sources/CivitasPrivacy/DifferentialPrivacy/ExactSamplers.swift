/// Exact samplers for the discrete Laplace and discrete Gaussian distributions
/// (Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
/// Privacy", 2020, Algorithms 1–3). Only integer and rational arithmetic is
/// used: no floating-point log, exp or sqrt, so the output distribution is
/// exactly the one the privacy proof assumes (see docs/privacy.md).
public struct ExactSampler<Source: RandomWords> {
    private var random: Source

    public init(random: Source) {
        self.random = random
    }

    /// A uniform integer in 0..<bound.
    mutating func randomUniform(below bound: UInt128) -> UInt128 {
        random.uniform(below: bound)
    }

    /// Bernoulli(p) for rational p in [0, 1].
    public mutating func bernoulli(_ p: Rational) -> Bool {
        random.uniform(below: p.denominator) < p.numerator
    }

    /// Bernoulli(exp(−γ)) for rational γ ≥ 0 (CKS20 Algorithm 1, with the
    /// reduction of γ > 1 to repeated Bernoulli(exp(−1))).
    public mutating func bernoulliExpMinus(_ gamma: Rational) -> Bool {
        var whole = gamma.floor
        while whole > 0 {
            if !bernoulliExpMinusAtMostOne(numerator: 1, denominator: 1) { return false }
            whole -= 1
        }
        let fraction = gamma.fractionalPart
        return bernoulliExpMinusAtMostOne(numerator: fraction.numerator, denominator: fraction.denominator)
    }

    /// Bernoulli(exp(−n/d)) for 0 ≤ n/d ≤ 1.
    private mutating func bernoulliExpMinusAtMostOne(numerator n: UInt128, denominator d: UInt128) -> Bool {
        var k: UInt128 = 1
        while true {
            // A ~ Bernoulli(γ / k) = Bernoulli(n / (d k)).
            guard let scaled = checkedMultiply(d, k) else { return k % 2 == 1 }
            if random.uniform(below: scaled) >= n { break }
            k += 1
        }
        return k % 2 == 1
    }

    /// A sample of the discrete Laplace distribution with scale `t/s` (s, t > 0):
    /// P(x) ∝ exp(−|x| · s / t) on the integers (CKS20 Algorithm 2).
    public mutating func discreteLaplace(scaleNumerator t: UInt128, scaleDenominator s: UInt128) -> Int64 {
        while true {
            let u = random.uniform(below: t)
            // D ~ Bernoulli(exp(−u/t))
            guard bernoulliExpMinusAtMostOne(numerator: u, denominator: t) else { continue }
            var v: UInt128 = 0
            while bernoulliExpMinusAtMostOne(numerator: 1, denominator: 1) { v += 1 }
            guard let tv = checkedMultiply(t, v), tv <= UInt128.max - u else { continue }
            let x = u + tv
            let y = x / s
            let negative = random.next() & 1 == 1
            if negative && y == 0 { continue }
            let magnitude = Int64(clamping: y)
            return negative ? -magnitude : magnitude
        }
    }

    /// A sample of the discrete Laplace distribution with rational scale b: P(x) ∝ exp(−|x|/b).
    public mutating func discreteLaplace(scale: Rational) -> Int64 {
        discreteLaplace(scaleNumerator: scale.numerator, scaleDenominator: scale.denominator)
    }

    /// A sample of the discrete Gaussian with variance parameter σ² = n/d:
    /// P(x) ∝ exp(−x² / (2σ²)) on the integers (CKS20 Algorithm 3).
    /// σ²'s numerator and denominator must each be below 2^40 (checked by ``DiscreteGaussianMechanism``),
    /// which keeps every intermediate product within 128 bits except for |y| beyond 16σ or so.
    public mutating func discreteGaussian(sigmaSquared: Rational) -> Int64 {
        let n = sigmaSquared.numerator, d = sigmaSquared.denominator
        // t = floor(σ) + 1, with floor(σ) the largest k such that k² d ≤ n.
        let t = Self.floorSquareRoot(numerator: n, denominator: d) + 1
        while true {
            let y = discreteLaplace(scaleNumerator: t, scaleDenominator: 1)
            // γ = (|y| − σ²/t)² / (2σ²) = (|y| t d − n)² / (2 n d t²)
            let magnitude = UInt128(y.magnitude)
            guard let ytd = checkedMultiply(magnitude, t).flatMap({ checkedMultiply($0, d) }) else { continue }
            let difference = ytd >= n ? ytd - n : n - ytd
            guard let numerator = checkedMultiply(difference, difference),
                  let denominator = checkedMultiply(2 * n, d).flatMap({ checkedMultiply($0, t) }).flatMap({ checkedMultiply($0, t) }),
                  let gamma = try? Rational(numerator, denominator) else {
                // Only for |y| far in the tail (beyond about 2^24), where exp(−γ) is below e^-100: reject.
                continue
            }
            if bernoulliExpMinus(gamma) { return y }
        }
    }

    /// The largest k with k² · d ≤ n.
    static func floorSquareRoot(numerator n: UInt128, denominator d: UInt128) -> UInt128 {
        var low: UInt128 = 0
        var high: UInt128 = 1 << 64
        while low < high {
            let middle = (low + high + 1) / 2
            if let square = checkedMultiply(middle, middle), let scaled = checkedMultiply(square, d), scaled <= n {
                low = middle
            } else {
                high = middle - 1
            }
        }
        return low
    }
}
