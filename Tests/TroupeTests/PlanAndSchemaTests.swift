import Foundation
import Testing
import Troupe

@Suite struct PlanValidatorTests {
    let validator = PlanValidator(availableTools: ["fs_read", "fs_list"], maxSteps: 3)

    func problems(_ json: String) -> [String] {
        if case .failure(let problems) = validator.validate(text: json) { return problems.problems }
        return []
    }

    @Test func acceptsAValidPlanInAnyWrapping() throws {
        let json = #"{"steps":[{"id":"s1","title":"List","instruction":"List files","tools":["fs_list"],"dependsOn":[]}]}"#
        for text in [json, "```json\n\(json)\n```", "Here is the plan:\n\(json)\nGood luck."] {
            let plan = try validator.validate(text: text).get()
            #expect(plan.steps.map(\.id) == ["s1"])
        }
    }

    @Test func reportsEveryKindOfProblemInWordsAModelCanFix() {
        #expect(problems("no json at all").first?.contains("no JSON object") == true)
        #expect(problems("{\"steps\": [").first?.contains("not valid JSON") == true)
        #expect(problems(#"{"steps":[{"id":"s1"}]}"#).contains { $0.contains("missing required property 'title'") })
        #expect(problems(#"{"steps":[]}"#).contains { $0.contains("at least 1") })
        let step = { (id: String, tools: String, deps: String) in
            #"{"id":"\#(id)","title":"t","instruction":"i","tools":[\#(tools)],"dependsOn":[\#(deps)]}"#
        }
        #expect(problems(#"{"steps":[\#(step("s1", #""rm""#, ""))]}"#).contains { $0.contains("unknown tool 'rm'") })
        #expect(problems(#"{"steps":[\#(step("s1", "", "")),\#(step("s1", "", ""))]}"#).contains { $0.contains("used twice") })
        #expect(problems(#"{"steps":[\#(step("s1", "", #""s9""#))]}"#).contains { $0.contains("unknown step 's9'") })
        #expect(
            problems(#"{"steps":[\#(step("a", "", #""b""#)),\#(step("b", "", #""c""#)),\#(step("c", "", #""a""#))]}"#)
                .contains { $0.contains("cycle") && $0.contains("a → b → c → a") }
        )
        let four = (1...4).map { step("s\($0)", "", "") }.joined(separator: ",")
        #expect(problems(#"{"steps":[\#(four)]}"#).contains { $0.contains("at most 3") })
    }

    @Test func replansMayDependOnFinishedStepsButNotReuseTheirIds() {
        let replan = PlanValidator(availableTools: [], maxSteps: 3, completedStepIDs: ["s1"])
        let ok = #"{"steps":[{"id":"s2","title":"t","instruction":"i","tools":[],"dependsOn":["s1"]}]}"#
        #expect((try? replan.validate(text: ok).get()) != nil)
        let reuse = #"{"steps":[{"id":"s1","title":"t","instruction":"i","tools":[],"dependsOn":[]}]}"#
        if case .failure(let problems) = replan.validate(text: reuse) {
            #expect(problems.problems.contains { $0.contains("already finished") })
        } else {
            Issue.record("reusing a finished step's id must be rejected")
        }
    }
}

@Suite struct JSONSchemaTests {
    let schema: JSONSchema = .object(
        [
            .init("path", .string(minLength: 1)),
            .init("count", .integer(minimum: 1, maximum: 10)),
            .init("mode", .string(enum: ["a", "b"])),
            .init("tags", .array(of: .string(), maxItems: 2)),
        ],
        required: ["path"]
    )

    @Test func validatesTheSubsetModelsUse() throws {
        #expect(schema.validate(["path": "x", "count": 3, "mode": "a", "tags": ["t"]]).isEmpty)
        #expect(schema.validate(["path": "x", "count": 3.0]).isEmpty)
        let violations = schema.validate(["count": 11, "mode": "c", "tags": ["1", "2", 3], "extra": true]).map(\.description)
        #expect(
            violations == [
                "$: missing required property 'path'",
                "$.count: must be ≤ 10",
                "$.mode: must be one of \"a\", \"b\"",
                "$.tags: must have at most 2 items",
                "$.tags[2]: expected string, got integer",
                "$: unexpected property 'extra'",
            ]
        )
        #expect(schema.validate("not an object").map(\.description) == ["$: expected object, got string"])
    }

    @Test func strictFormMakesEveryPropertyRequiredAndOptionalOnesNullable() throws {
        let strict = schema.strictForOpenAI()
        #expect(strict.required == ["path", "count", "mode", "tags"])
        #expect(strict.additionalProperties == false)
        #expect(strict.properties.first { $0.name == "count" }?.schema.types == ["integer", "null"])
        #expect(strict.properties.first { $0.name == "path" }?.schema.types == ["string"])
    }

    @Test func roundTripsThroughJSONSchemaJSON() throws {
        let json = try JSONCodingRoundTrip.encode(schema)
        let decoded = try JSONSchema(jsonValue: try JSONValue.parse(json))
        #expect(decoded.validate(["path": ""]).map(\.description) == ["$.path: must have at least 1 characters"])
        #expect(Set(decoded.properties.map(\.name)) == ["path", "count", "mode", "tags"])
    }

    @Test func jsonValueKeepsIntegersApartFromDoubles() throws {
        #expect(try JSONValue.parse("[1, 1.5, true, null, \"s\"]") == [1, 1.5, true, nil, "s"])
        #expect(JSONValue.int(3).jsonString == "3")
        #expect(throws: TroupeError.self) { try JSONValue.parse("{nope") }
    }
}

enum JSONCodingRoundTrip {
    static func encode(_ schema: JSONSchema) throws -> String {
        String(decoding: try JSONEncoder().encode(schema), as: UTF8.self)
    }
}
