import Foundation
internal import MCP
public import TroupeCore

/// A tool as an MCP server lists it.
public struct MCPRemoteTool: Sendable, Hashable {
    /// Its name at the server (MCP allows dots and up to 128 characters).
    public var name: String
    public var description: String
    /// Its JSON Schema, as the server sent it.
    public var inputSchema: JSONValue

    public init(name: String, description: String, inputSchema: JSONValue) {
        self.name = name
        self.description = description
        self.inputSchema = inputSchema
    }

    init(_ tool: MCP.Tool) {
        self.init(name: tool.name, description: tool.description ?? tool.title ?? "", inputSchema: JSONValue(tool.inputSchema))
    }
}

extension JSONValue {
    /// The value as the MCP SDK's `Value`.
    var mcpValue: MCP.Value {
        switch self {
        case .null: .null
        case .bool(let value): .bool(value)
        case .int(let value): .int(value)
        case .double(let value): .double(value)
        // The SDK's values have no exact form for it: the nearest Double, as JSON readers would.
        case .bigInteger(let digits): .double(Double(digits) ?? 0)
        case .string(let value): .string(value)
        case .array(let values): .array(values.map(\.mcpValue))
        case .object(let members): .object(members.mapValues(\.mcpValue))
        }
    }

    /// An object's members as tool-call arguments (anything else is no arguments).
    var mcpObject: [String: MCP.Value]? {
        objectValue?.mapValues(\.mcpValue)
    }

    /// The SDK's value as JSON; binary data becomes a `data:` URL, as on the wire.
    init(_ value: MCP.Value) {
        switch value {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .int(let value): self = .int(value)
        case .double(let value): self = .double(value)
        case .string(let value): self = .string(value)
        case .data(let mimeType, let data):
            self = .string("data:\(mimeType ?? "application/octet-stream");base64,\(data.base64EncodedString())")
        case .array(let values): self = .array(values.map(JSONValue.init))
        case .object(let members): self = .object(members.mapValues(JSONValue.init))
        }
    }
}

/// A tool result's content as text for the model.
enum MCPContent {
    static func text(of result: CallTool.Result) -> String {
        var parts = result.content.map(describe)
        // Structured content alone (no text for it): the JSON itself.
        if parts.isEmpty, let structured = result.structuredContent {
            parts.append(JSONValue(structured).jsonString)
        }
        return parts.isEmpty ? "(no content)" : parts.joined(separator: "\n")
    }

    private static func describe(_ content: MCP.Tool.Content) -> String {
        switch content {
        case .text(let text, _, _):
            return text
        case .image(let data, let mimeType, _, _):
            return "[image \(mimeType), \(approximateBytes(ofBase64: data)) bytes, not shown]"
        case .audio(let data, let mimeType, _, _):
            return "[audio \(mimeType), \(approximateBytes(ofBase64: data)) bytes, not shown]"
        case .resource(let resource, _, _):
            if let text = resource.text { return "[resource \(resource.uri)]\n\(text)" }
            return "[resource \(resource.uri)\(resource.mimeType.map { ", \($0)" } ?? ""), binary, not shown]"
        case .resourceLink(let uri, let name, _, let description, _, _):
            return "[link \(name): \(uri)\(description.map { " — \($0)" } ?? "")]"
        }
    }

    /// The size of the data the base64 text encodes (without decoding it).
    private static func approximateBytes(ofBase64 text: String) -> Int {
        let padding = text.utf8.reversed().prefix { $0 == UInt8(ascii: "=") }.count
        return max(0, text.utf8.count / 4 * 3 - padding)
    }
}
