import Foundation

// Writes a Swift file declaring `public enum <name> { public static let text: String }` with the
// contents of a text file, for the build plugin that embeds openapi.yaml in the server.
let arguments = CommandLine.arguments
guard arguments.count == 4 else {
    FileHandle.standardError.write(Data("usage: EmbedFile INPUT OUTPUT TYPE\n".utf8))
    exit(64)
}
let text = try String(contentsOfFile: arguments[1], encoding: .utf8)
// A raw string with more #s than any run of # in the text cannot be ended by it.
var hashes = "#"
while text.contains("\"" + hashes) || text.contains("\\" + hashes) { hashes += "#" }
let source = """
    // Generated at build time from \((arguments[1] as NSString).lastPathComponent); do not edit.
    /// The API's OpenAPI document, as the repository holds it.
    public enum \(arguments[3]) {
        public static let yaml: String = \(hashes)\"\"\"
    \(text)
    \"\"\"\(hashes)
    }

    """
try source.write(toFile: arguments[2], atomically: true, encoding: .utf8)
