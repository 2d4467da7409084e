import Foundation
import Testing
@testable import CivitasPrivacy

/// Mironov's attack on floating-point Laplace (CCS 2012), as an adversary would
/// run it: release the true values 0 and 1 many times and guess "0" whenever the
/// output is not a multiple of 2^-53. Every sum 1 + noise computed in binary64
/// with |result| < 2 is such a multiple, so for a naive sampler this guess is
/// never wrong and almost always available. For a DP mechanism, no outcome of any
/// test may be more than e^ε times likelier under one input than the other.
@Suite("Floating-point attack")
struct FloatingPointAttackTests {
    static let releases = 100_000

    /// The distinguisher: true when the output cannot be 1 + noise in binary64.
    static func looksLikeZero(_ y: Double) -> Bool {
        let scaled = y * 9_007_199_254_740_992  // 2^53, exact
        return abs(y) < 2 && scaled != scaled.rounded()
    }

    /// The positive control: the textbook float Laplace, x + b·sign·(−ln u).
    struct NaiveFloatLaplace {
        let scale: Double
        var random = SystemRandomness()
        mutating func release(_ x: Double) -> Double {
            let bits = random.next()
            let u = Double((bits >> 11) | 1) / 9_007_199_254_740_992  // (0, 1) with 53 bits
            let magnitude = -scale * log(u)
            return bits & 1 == 1 ? x + magnitude : x - magnitude
        }
    }

    func rates(_ release: (Double) -> Double) -> (fromZero: Double, fromOne: Double) {
        var zero = 0, one = 0
        for _ in 0..<Self.releases {
            if Self.looksLikeZero(release(0)) { zero += 1 }
            if Self.looksLikeZero(release(1)) { one += 1 }
        }
        return (Double(zero) / Double(Self.releases), Double(one) / Double(Self.releases))
    }

    /// The check both mechanisms face at ε = 1 for sensitivity 1: the distinguisher's
    /// outcome may be at most e^ε times likelier under one input than the other
    /// (with a small margin for sampling error on 100,000 releases).
    static func violatesDifferentialPrivacy(fromZero: Double, fromOne: Double, epsilon: Double) -> Bool {
        let bound = exp(epsilon) * 1.1
        let margin = 0.005
        return fromZero > bound * fromOne + margin || fromOne > bound * fromZero + margin
    }

    @Test("The attack breaks naive float Laplace at ε = 1 (positive control)")
    func naiveIsCaught() {
        var naive = NaiveFloatLaplace(scale: 1)  // sensitivity 1, ε = 1 on paper
        let (fromZero, fromOne) = rates { naive.release($0) }
        // Outputs from 1 never look like 0; many outputs from 0 do: those releases reveal the input.
        #expect(fromOne == 0)
        #expect(fromZero > 0.2)
        #expect(Self.violatesDifferentialPrivacy(fromZero: fromZero, fromOne: fromOne, epsilon: 1))
    }

    @Test("The same attack stays within e^ε against Civitas' grid mechanism at ε = 1")
    func gridMechanismPasses() throws {
        let noise = try BoundedMeasureNoise(lower: "0", upper: "1", grid: try DecimalGrid(fractionDigits: 2),
                                            epsilon: try Rational(decimal: "1"))
        var sampler = ExactSampler(random: SystemRandomness())
        var failures = 0
        let (fromZero, fromOne) = rates { value in
            guard let text = try? noise.release(value == 0 ? "0" : "1", using: &sampler), let y = Double(text) else {
                failures += 1
                return .nan
            }
            return y
        }
        #expect(failures == 0)
        #expect(fromZero > 0 && fromOne > 0, "both inputs produce such outputs: \(fromZero), \(fromOne)")
        #expect(!Self.violatesDifferentialPrivacy(fromZero: fromZero, fromOne: fromOne, epsilon: 1), "rates \(fromZero) vs \(fromOne)")
    }

    @Test("Grid outputs are exactly on the grid: their digits carry no information about the input")
    func gridOutputsOnGrid() throws {
        let noise = try BoundedMeasureNoise(lower: "-5", upper: "5", grid: try DecimalGrid(fractionDigits: 3),
                                            epsilon: try Rational(decimal: "1"))
        var sampler = ExactSampler(random: SystemRandomness())
        for input in ["-5", "0.0004", "4.9995", "12"] {
            for _ in 0..<1000 {
                let text = try noise.release(input, using: &sampler)
                let fraction = text.split(separator: ".").last ?? ""
                #expect(fraction.count == 3 && fraction.allSatisfy(\.isNumber), "\(text)")
            }
        }
    }
}
