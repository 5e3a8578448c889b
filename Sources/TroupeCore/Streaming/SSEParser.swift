/// One server-sent event.
public struct SSEEvent: Sendable, Hashable {
    /// The `event:` field; empty when the server sent none (the default type, "message").
    public var event: String
    /// The `data:` lines joined with newlines.
    public var data: String
    public var id: String?

    public init(event: String = "", data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }
}

/// An incremental parser for `text/event-stream` (the WHATWG server-sent events format).
///
/// Feed it bytes as they arrive, split anywhere: lines may end with CRLF, LF or CR (even a CRLF
/// split across two chunks), `:` lines are comments, several `data:` lines join with newlines,
/// and a blank line dispatches the event.
public struct SSEParser: Sendable {
    private var line: [UInt8] = []
    private var lastWasCR = false
    private var data: [UInt8] = []
    private var hasData = false
    private var eventType = ""
    private var lastEventID: String?
    /// How many bytes of a leading byte-order mark have been seen; `nil` once past the start.
    private var byteOrderMark: Int? = 0
    private static let bom: [UInt8] = [0xEF, 0xBB, 0xBF]

    public init() {}

    /// Parses more bytes; returns the events they complete.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [SSEEvent] {
        var events: [SSEEvent] = []
        let fed: Void? = bytes.withContiguousStorageIfAvailable { feed($0, into: &events) }
        if fed == nil {
            Array(bytes).withUnsafeBufferPointer { feed($0, into: &events) }
        }
        return events
    }

    /// Scans for line ends and copies whole runs of bytes: the per-byte work is one comparison.
    private mutating func feed(_ buffer: UnsafeBufferPointer<UInt8>, into events: inout [SSEEvent]) {
        var index = 0
        // A stream may begin with a UTF-8 byte-order mark, which is not part of its first line
        // (the first event would otherwise have the field "\u{FEFF}data" and be lost).
        while var seen = byteOrderMark, index < buffer.count {
            if buffer[index] == Self.bom[seen] {
                seen += 1
                index += 1
                byteOrderMark = seen == Self.bom.count ? nil : seen
            } else {
                line.append(contentsOf: Self.bom[0..<seen])
                byteOrderMark = nil
            }
        }
        while index < buffer.count {
            if lastWasCR {
                lastWasCR = false
                // The LF of a CRLF: the line already ended at the CR (which may have been in the last chunk).
                if buffer[index] == UInt8(ascii: "\n") {
                    index += 1
                    continue
                }
            }
            var end = index
            while end < buffer.count, buffer[end] != UInt8(ascii: "\n"), buffer[end] != UInt8(ascii: "\r") { end += 1 }
            line.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[index..<end]))
            guard end < buffer.count else { return }  // the line goes on in the next chunk
            lastWasCR = buffer[end] == UInt8(ascii: "\r")
            endLine(into: &events)
            index = end + 1
        }
    }

    /// Ends the stream: a last event not followed by a blank line is still delivered.
    public mutating func finish() -> [SSEEvent] {
        var events: [SSEEvent] = []
        if !line.isEmpty { endLine(into: &events) }
        if hasData { dispatch(into: &events) }
        return events
    }

    private mutating func endLine(into events: inout [SSEEvent]) {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            dispatch(into: &events)
            return
        }
        if line[0] == UInt8(ascii: ":") { return }  // a comment, e.g. a keep-alive
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = []
        }
        if field.elementsEqual("data".utf8) {
            if hasData { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: value)
            hasData = true
        } else if field.elementsEqual("event".utf8) {
            eventType = String(decoding: value, as: UTF8.self)
        } else if field.elementsEqual("id".utf8) {
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        }
        // `retry` and unknown fields are ignored.
    }

    private mutating func dispatch(into events: inout [SSEEvent]) {
        defer {
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventType = ""
        }
        guard hasData else { return }
        events.append(SSEEvent(event: eventType, data: String(decoding: data, as: UTF8.self), id: lastEventID))
    }
}
