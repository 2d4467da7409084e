import Foundation

/// Generated caller numbers for the demo's calls: about 4,000 callers, some calling more than once;
/// one caller in ten never consents.
enum DemoCallers {
    static func caller(forCall index: Int) -> String {
        var x = UInt64(index) &* 0x9E3779B97F4A7C15
        x ^= x >> 29
        return String(format: "215-555-%04d", Int(x % 4000))
    }

    static func neverConsents(_ caller: String) -> Bool {
        caller.hasSuffix("0")
    }
}

/// A small deterministic generator (a 64-bit linear congruential step) for the demo's made-up
/// records, so every run shows the same data. Not for anything secret.
struct DemoRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// A number in 0..<bound.
    mutating func next(_ bound: Int) -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int((state >> 33) % UInt64(bound))
    }
}

/// Generated TrafficFlowObserved records (the Smart Data Models shape, flat): six lanes in two
/// directions, hourly, with intensity and speed. Deterministic.
enum TrafficSample {
    static func csv(rows: Int) -> String {
        var random = DemoRandom(seed: 0x2545F4914F6CDD1D)
        func next(_ bound: Int) -> Int { random.next(bound) }
        var lines = ["id,type,laneId,laneDirection,dateObserved,intensity,averageVehicleSpeed"]
        for index in 0..<rows {
            let lane = index % 6 + 1
            let hour = index / 6
            let stamp = String(format: "2026-11-%02dT%02d:00:00Z", hour / 24 % 28 + 1, hour % 24)
            lines.append("urn:ngsi-ld:TrafficFlowObserved:lane-\(lane)-\(index),TrafficFlowObserved,\(lane),\(lane <= 3 ? "forward" : "backward"),\(stamp),\(200 + next(1200)),\(30 + next(70)).\(next(10))")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Generated 911-shaped rows (same columns as the Montgomery County sample) for
/// machines without the shared reference data. Deterministic, not real people.
enum SampleCalls {
    static func csv(rows: Int) -> String {
        let types = ["EMS: FALL VICTIM", "EMS: RESPIRATORY EMERGENCY", "Fire: VEHICLE ACCIDENT", "Traffic: DISABLED VEHICLE -",
                     "EMS: CARDIAC EMERGENCY", "EMS: OVERDOSE", "Fire: FIRE ALARM"]
        let townships = ["NORRISTOWN", "LOWER MERION", "ABINGTON", "CHELTENHAM", "POTTSTOWN", "UPPER MERION"]
        let streets = ["MAIN ST", "HIGH ST", "DEKALB PIKE", "RIDGE PIKE", "BUTLER PIKE", "EGYPT RD"]
        var random = DemoRandom(seed: 0x9E3779B97F4A7C15)
        func next(_ bound: Int) -> Int { random.next(bound) }
        var lines = ["lat,lng,desc,zip,title,timeStamp,twp,addr,e"]
        for _ in 0..<rows {
            let lat = 40.0 + Double(next(400_000)) / 1_000_000
            let lng = -75.5 + Double(next(400_000)) / 1_000_000
            let township = townships[next(townships.count)]
            let street = "\(next(9000) + 1) \(streets[next(streets.count)])"
            let zip = 19000 + next(600)
            let stamp = String(format: "2016-%02d-%02d %02d:%02d:%02d", next(12) + 1, next(28) + 1, next(24), next(60), next(60))
            let title = types[next(types.count)]
            lines.append(String(format: "%.7f,%.7f,%@;  %@; Station %d;,%d,%@,%@,%@,%@,1",
                                lat, lng, street, township, next(400), zip, title, stamp, township, street))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
