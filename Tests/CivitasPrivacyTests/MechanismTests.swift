import Testing
@testable import CivitasPrivacy

@Suite("Mechanisms, grid and budget")
struct MechanismTests {
    @Test("Decimals are read exactly as grid units, rounding half to even")
    func gridParsing() throws {
        let grid = try DecimalGrid(fractionDigits: 2)
        #expect(try grid.units(of: "12.34") == 1234)
        #expect(try grid.units(of: "-0.5") == -50)
        #expect(try grid.units(of: "3") == 300)
        #expect(try grid.units(of: ".25") == 25)
        #expect(try grid.units(of: "0.125") == 12)   // half to even
        #expect(try grid.units(of: "0.135") == 14)
        #expect(try grid.units(of: "0.1251") == 13)
        #expect(grid.text(of: -5) == "-0.05")
        #expect(grid.text(of: 123_456) == "1234.56")
        for bad in ["", "1e3", "nan", "1.2.3", "--1", "0x10", " 1"] {
            #expect(throws: PrivacyError(.invalidValue, "")) { try grid.units(of: bad) }
        }
    }

    @Test("Bounded measures are clamped before noise")
    func clamping() throws {
        let noise = try BoundedMeasureNoise(lower: "0", upper: "100", grid: try DecimalGrid(fractionDigits: 0),
                                            epsilon: try Rational(decimal: "1000"))
        var sampler = ExactSampler(random: SystemRandomness())
        // With ε = 1000 the noise is almost always 0 for this scale (0.1 units), so the clamp shows.
        let outputs = try (0..<200).map { _ in try noise.release("1000000", using: &sampler) }
        #expect(outputs.filter { $0 == "100" }.count > 150)
    }

    @Test("Impossible parameters are refused when the mechanism is built")
    func parameters() throws {
        #expect(throws: PrivacyError(.invalidParameter, "")) { try DiscreteLaplaceMechanism(epsilon: try Rational(0), sensitivity: 1) }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try DiscreteLaplaceMechanism(epsilon: try Rational(1), sensitivity: 0) }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try DiscreteGaussianMechanism(rho: try Rational(0), sensitivity: 1) }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try Rational(decimal: "-1") }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try Rational(decimal: "1e-3") }
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try BoundedMeasureNoise(lower: "5", upper: "5", grid: try DecimalGrid(fractionDigits: 0), epsilon: try Rational(1))
        }
        let gaussian = try DiscreteGaussianMechanism(rho: try Rational(decimal: "0.125"), sensitivity: 1)
        #expect(gaussian.sigmaSquared == (try Rational(4)))
        let laplace = try DiscreteLaplaceMechanism(epsilon: try Rational(decimal: "0.5"), sensitivity: 3)
        #expect(laplace.scale == (try Rational(6)))
    }

    @Test("The budget refuses a charge that would exceed it and charges nothing")
    func budget() throws {
        var budget = PrivacyBudget(epsilonBudgetMicro: 1_000_000, rhoBudgetMicro: 500_000)
        let half = try PrivacyCharge(try DiscreteLaplaceMechanism(epsilon: try Rational(decimal: "0.5"), sensitivity: 1))
        try budget.charge(half)
        try budget.charge(half)
        #expect(budget.remaining.epsilonMicro == 0)
        #expect(throws: PrivacyError(.budgetExceeded, "")) { try budget.charge(PrivacyCharge(epsilonMicro: 1)) }
        #expect(budget.spent.epsilonMicro == 1_000_000)
        let gaussian = try PrivacyCharge(try DiscreteGaussianMechanism(rho: try Rational(decimal: "0.3"), sensitivity: 1))
        try budget.charge(gaussian)
        #expect(throws: PrivacyError(.budgetExceeded, "")) { try budget.charge(gaussian) }
        #expect(budget.spent.rhoMicro == 300_000)
        // ρ = 0.3 at δ = 1e-6: ε = 0.3 + 2√(0.3 · ln 10^6) ≈ 4.371.
        #expect(abs(budget.approximateEpsilon(delta: 1e-6) - 4.3713) < 0.001)
        // A charge is rounded up, never down.
        #expect(try PrivacyCharge.micro(try Rational(1, 3)) == 333_334)
    }
}
