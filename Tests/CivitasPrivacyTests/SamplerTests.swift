import Foundation
import Testing
@testable import CivitasPrivacy

/// Pearson's χ² of observed counts against expected probabilities, merging
/// cells with an expected count below 5 into their neighbours.
func chiSquare(observed: [Int], probabilities: [Double], total: Int) -> (statistic: Double, degrees: Int) {
    var cells: [(Double, Double)] = []
    var pendingObserved = 0.0, pendingExpected = 0.0
    for (count, p) in zip(observed, probabilities) {
        pendingObserved += Double(count)
        pendingExpected += p * Double(total)
        if pendingExpected >= 5 {
            cells.append((pendingObserved, pendingExpected))
            pendingObserved = 0
            pendingExpected = 0
        }
    }
    if pendingExpected > 0, let last = cells.popLast() {
        cells.append((last.0 + pendingObserved, last.1 + pendingExpected))
    }
    let statistic = cells.reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) / $1.1 }
    return (statistic, cells.count - 1)
}

/// The χ² critical value at significance 10^-6 (Wilson–Hilferty approximation), so
/// that a correct sampler fails a run about once in a million.
func chiSquareCritical(degrees: Int) -> Double {
    let k = Double(degrees), z = 4.753
    let term = 1 - 2 / (9 * k) + z * (2 / (9 * k)).squareRoot()
    return k * term * term * term
}

/// Histogram of samples over [-range, range], with the two tails as the first and last cells.
func histogram(_ samples: [Int64], range: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: 2 * range + 3)
    for x in samples {
        let cell = x < -Int64(range) ? 0 : x > Int64(range) ? 2 * range + 2 : Int(x) + range + 1
        counts[cell] += 1
    }
    return counts
}

/// Exact cell probabilities of a symmetric integer pmf given up to normalization.
func cellProbabilities(range: Int, weight: (Int) -> Double, support: Int = 2000) -> [Double] {
    let total = (-support...support).reduce(0.0) { $0 + weight($1) }
    var cells = [Double](repeating: 0, count: 2 * range + 3)
    for x in -support...support {
        let cell = x < -range ? 0 : x > range ? 2 * range + 2 : x + range + 1
        cells[cell] += weight(x) / total
    }
    return cells
}

@Suite("Exact samplers (CKS20)")
struct SamplerTests {
    @Test("Bernoulli(exp(−γ)) has the right frequency", arguments: [("0", 1.0), ("1/3", exp(-1.0 / 3)), ("1", exp(-1.0)), ("5/2", exp(-2.5))])
    func bernoulliExp(gamma: String, expected: Double) throws {
        let parts = gamma.split(separator: "/").compactMap { UInt128(String($0)) }
        let rational = try Rational(parts[0], parts.count > 1 ? parts[1] : 1)
        var sampler = ExactSampler(random: SystemRandomness())
        let n = 200_000
        let hits = (0..<n).reduce(0) { count, _ in count + (sampler.bernoulliExpMinus(rational) ? 1 : 0) }
        let deviation = (expected * (1 - expected) / Double(n)).squareRoot()
        #expect(abs(Double(hits) / Double(n) - expected) <= 6 * deviation + 1e-9, "γ = \(gamma): \(Double(hits) / Double(n)) vs \(expected)")
    }

    @Test("Discrete Laplace matches its exact pmf (χ²)", arguments: [(UInt128(2), UInt128(1)), (3, 2), (1, 1), (10, 3)])
    func discreteLaplace(t: UInt128, s: UInt128) throws {
        var sampler = ExactSampler(random: SystemRandomness())
        let n = 200_000
        let samples = (0..<n).map { _ in sampler.discreteLaplace(scaleNumerator: t, scaleDenominator: s) }
        let scale = Double(t) / Double(s)
        let range = Int(8 * scale) + 2
        let probabilities = cellProbabilities(range: range) { exp(-Double(abs($0)) / scale) }
        let (statistic, degrees) = chiSquare(observed: histogram(samples, range: range), probabilities: probabilities, total: n)
        #expect(statistic < chiSquareCritical(degrees: degrees), "scale \(t)/\(s): χ² = \(statistic) on \(degrees) degrees of freedom")
    }

    @Test("Discrete Gaussian matches its exact pmf (χ²)", arguments: [(UInt128(4), UInt128(1)), (1, 2), (25, 1), (9, 4)])
    func discreteGaussian(n sigmaNumerator: UInt128, d sigmaDenominator: UInt128) throws {
        var sampler = ExactSampler(random: SystemRandomness())
        let sigma2 = try Rational(sigmaNumerator, sigmaDenominator)
        let n = 200_000
        let samples = (0..<n).map { _ in sampler.discreteGaussian(sigmaSquared: sigma2) }
        let variance = Double(sigmaNumerator) / Double(sigmaDenominator)
        let range = Int(6 * variance.squareRoot()) + 2
        let probabilities = cellProbabilities(range: range) { exp(-Double($0 * $0) / (2 * variance)) }
        let (statistic, degrees) = chiSquare(observed: histogram(samples, range: range), probabilities: probabilities, total: n)
        #expect(statistic < chiSquareCritical(degrees: degrees), "σ² = \(sigma2): χ² = \(statistic) on \(degrees) degrees of freedom")
    }

    @Test("A sampler that is off by a little fails the same χ² test (the test has power)")
    func chiSquareHasPower() throws {
        var sampler = ExactSampler(random: SystemRandomness())
        let n = 200_000
        // Scale 2.2 samples judged against the scale-2 pmf.
        let samples = (0..<n).map { _ in sampler.discreteLaplace(scaleNumerator: 11, scaleDenominator: 5) }
        let range = 18
        let probabilities = cellProbabilities(range: range) { exp(-Double(abs($0)) / 2) }
        let (statistic, degrees) = chiSquare(observed: histogram(samples, range: range), probabilities: probabilities, total: n)
        #expect(statistic > chiSquareCritical(degrees: degrees))
    }

    @Test("floor(σ) is exact")
    func floorSquareRoot() {
        #expect(ExactSampler<SystemRandomness>.floorSquareRoot(numerator: 4, denominator: 1) == 2)
        #expect(ExactSampler<SystemRandomness>.floorSquareRoot(numerator: 3, denominator: 1) == 1)
        #expect(ExactSampler<SystemRandomness>.floorSquareRoot(numerator: 1, denominator: 2) == 0)
        #expect(ExactSampler<SystemRandomness>.floorSquareRoot(numerator: 99, denominator: 4) == 4)
        #expect(ExactSampler<SystemRandomness>.floorSquareRoot(numerator: 100, denominator: 4) == 5)
    }
}
